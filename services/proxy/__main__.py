"""`python -m services.proxy`: the device-facing TCP proxy (port MEDSEC_PROXY_PORT)."""
from __future__ import annotations

import asyncio
import sys

from services.common import logs
from services.common.config import Config
from services.common.logs import kv
from services.common.state import StateError
from services.proxy.server import ProxyServer, install_signals


async def _serve(config: Config) -> None:
    server = ProxyServer(config)
    install_signals(server)
    await server.serve()


def main() -> int:
    log = logs.setup("proxy")
    try:
        config = Config.from_env()
    except ValueError as exc:
        log.error(kv(event="bad_config", detail=str(exc)))
        return 2
    try:
        asyncio.run(_serve(config))
    except (OSError, StateError) as exc:  # port in use, state dir not initialised
        log.error(kv(event="cannot_start", detail=str(exc)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
