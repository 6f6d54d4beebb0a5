"""`python -m services.nodered`: prepare the userDir and settings, then become Node-RED.

supervisord runs the argv of prepare() directly; this entry point is the same for a person
running Node-RED alone against a state directory (`medsec up` must have initialised it).
"""
from __future__ import annotations

import os
import sys

from services.common import logs
from services.common.config import service_config
from services.common.state import StateError
from services.nodered import available, osuser, prepare


def main() -> int:
    log = logs.setup("nodered")
    if not available():
        log.error(logs.kv(event="not_installed", hint="make -C nodered install"))
        return 2
    config = service_config("nodered")
    try:
        argv, env, user = prepare(config)
    except (StateError, ValueError) as exc:
        log.error(logs.kv(event="cannot_prepare", reason=exc))
        return 2
    log.info(logs.kv(event="starting", port=config.nodered_port, userdir=config.home / "nodered",
                     user=user.name if user else os.getuid()))
    if user:
        osuser.drop_to(user)
    os.execvpe(argv[0], argv, {**os.environ, **env})
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
