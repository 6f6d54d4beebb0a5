"""Node-RED as part of a medsec stack: settings, userDir and the command that runs it.

`prepare(config)` writes everything into `$MEDSEC_HOME/nodered/` and returns the argv and
environment for supervisord. Secrets stay in the state directory: the generated settings.js
reads them from `secrets/` at start and hands them to the flow's medsec-gateway node as
environment variables (its credentials are `${MEDSEC_NR_...}` references), so they appear in
no flow file, no command line and no supervisord config.
"""
from __future__ import annotations

from services.nodered.runtime import (
    ADMIN_USER,
    NODERED_DIR,
    admin_password,
    available,
    prepare,
)

__all__ = ["ADMIN_USER", "NODERED_DIR", "admin_password", "available", "prepare"]
