"""`python -m services.proxy`: the device-facing TCP proxy (port MEDSEC_PROXY_PORT)."""
from __future__ import annotations

import asyncio
import resource
import sys

from services.common import logs
from services.common.config import Config, service_config
from services.common.logs import kv
from services.common.state import StateError
from services.proxy.server import ProxyServer, install_signals


async def _serve(config: Config) -> None:
    server = ProxyServer(config)
    install_signals(server)
    await server.serve()


def raise_file_limit(connections: int) -> int:
    """Each device is a file descriptor: lift the soft limit toward the hard one (never above it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + 256  # the broker, auth, logs and a margin
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        return want
    return soft


def main() -> int:
    log = logs.setup("proxy")
    config = service_config("proxy")
    files = raise_file_limit(config.max_connections)
    if files < config.max_connections:
        log.warning(kv(event="file_limit", limit=files, max_connections=config.max_connections,
                       detail="fewer file descriptors than MEDSEC_MAX_CONNECTIONS"))
    try:
        asyncio.run(_serve(config))
    except (OSError, StateError) as exc:  # port in use, state dir not initialised
        log.error(kv(event="cannot_start", detail=str(exc)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
