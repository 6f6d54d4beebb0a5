"""Node-RED as part of a medsec stack: settings, userDir and the command that runs it.

`prepare(config)` writes everything into `$MEDSEC_HOME/nodered/` and returns the argv,
environment and OS user for supervisord. Node-RED never reads `secrets/`: its own secrets.json
(login hashes, credential secret, broker password, key-admin token) is rendered into its userDir,
and settings.js hands the flow's medsec-gateway node its secrets as environment variables (its
credentials are `${MEDSEC_NR_...}` references), so they appear in no flow file, no command line
and no supervisord config. Started by root, Node-RED runs as its own user (osuser.py).
"""
from __future__ import annotations

from services.nodered.runtime import (
    ADMIN_USER,
    LOGINS,
    NODERED_DIR,
    admin_password,
    available,
    login_password,
    prepare,
)

__all__ = ["ADMIN_USER", "LOGINS", "NODERED_DIR", "admin_password", "available", "login_password", "prepare"]
