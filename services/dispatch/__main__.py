"""`python -m services.dispatch`: the parameter server of seed workflow 2.

Config, service, transport, wired here; SIGTERM stops taking messages, waits for the
broker to acknowledge the answers in flight, and exits 0.
"""
from __future__ import annotations

import asyncio
import signal
import sys

from services.common.adminclient import AdminApiError, AdminClient
from services.common.config import Config, service_config
from services.common.logs import kv, setup
from services.common.state import StateError, service_token
from services.dispatch.keys import StationKeys, load_or_create_server_key
from services.dispatch.service import DispatchConfig, DispatchService
from services.dispatch.transport import DispatchTransport

KEY_LOOKUP_TIMEOUT = 3.0
# A key-admin API that is briefly unreachable (restarting, a name lookup failing) is asked again
# for this long: the answer to a station's message is sent only once its key is known.
KEY_LOOKUP_WAIT = 10.0


async def serve(config: Config, service: DispatchService) -> None:
    loop = asyncio.get_running_loop()
    transport = DispatchTransport(config, service, loop)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await transport.run(stop)


def main() -> int:
    log = setup("dispatch")
    config = service_config("dispatch")
    cfg = DispatchConfig.from_config(config)
    try:
        # Its own token, scope stations:read: station public keys and nothing else (state.SERVICE_TOKENS).
        api = AdminClient(config.admin_url, service_token(config, "dispatch"), timeout=KEY_LOOKUP_TIMEOUT,
                          wait=KEY_LOOKUP_WAIT)
        server_key = load_or_create_server_key(config)
        service = DispatchService(cfg, server_key, StationKeys(api, ttl=cfg.key_ttl), lambda *_: None)
    except (StateError, AdminApiError, ValueError, OSError) as exc:
        log.error(kv(event="start_failed", error=str(exc)))
        return 1
    log.info(kv(event="started", line_dir=cfg.params_dir, state=cfg.state_path))
    asyncio.run(serve(config, service))
    log.info(kv(event="stopped", handled=service.handled))
    return 0


if __name__ == "__main__":
    sys.exit(main())
