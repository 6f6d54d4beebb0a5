"""`python -m services.publisher`: internal bus -> public topic tree."""
from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from services.common import logs
from services.common.config import Config
from services.common.logs import kv
from services.common.state import StateError
from services.publisher import metrics
from services.publisher.service import PublisherService
from services.publisher.transport import BusTransport

METRICS_INTERVAL = 2.0


async def serve(config: Config, log) -> int:
    try:
        service = PublisherService(log)
        transport = BusTransport(config, service, log)
    except (ValueError, StateError) as exc:
        log.error(kv(event="startup_failed", error=exc))
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics_path = config.run_dir / "metrics-publisher.prom"

    def write_metrics() -> None:
        try:
            metrics.write(metrics_path, metrics.render(service.counters.snapshot(), transport.connected))
        except OSError as exc:
            log.warning(kv(event="metrics_write_failed", error=exc))

    async def metrics_loop() -> None:
        while True:
            await asyncio.sleep(METRICS_INTERVAL)
            write_metrics()

    log.info(kv(event="started", broker=f"{getattr(config, 'broker_host', config.host)}:{config.mqtt_port}"))
    writer = asyncio.create_task(metrics_loop())
    try:
        await transport.run(stop)
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
    write_metrics()
    counts = {k: v for k, v in service.counters.snapshot().items() if k != "rejected"}
    log.info(kv(event="stopped", drained=int(transport.drained), **counts))
    return 0


def main() -> int:
    log = logs.setup("publisher")
    try:
        config = Config.from_env()
    except ValueError as exc:
        log.error(kv(event="startup_failed", error=exc))
        return 1
    return asyncio.run(serve(config, log))


if __name__ == "__main__":
    sys.exit(main())
