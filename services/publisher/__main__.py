"""`python -m services.publisher`: internal bus -> public topic tree."""
from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys

from services.common import logs
from services.common.config import Config, service_config
from services.common.logs import kv
from services.common.state import StateError
from services.publisher import dedup, lease, metrics
from services.publisher.service import PublisherService
from services.publisher.transport import CLIENT_ID, SUBSCRIPTIONS, BusTransport

METRICS_INTERVAL = 2.0


async def serve(config: Config, log) -> int:
    # Several instances: EMQX shares the subscriptions among them, each with its own persistent
    # session under a stable id (MEDSEC_PUBLISHER_ID): what EMQX queued for an instance while it was
    # down waits for it under that id. Mosquitto gets one active instance, the others wait as
    # standbys (services/publisher/lease.py).
    shared = config.publisher_shared
    client_id = f"{CLIENT_ID}-{config.publisher_id or socket.gethostname()}" if shared else CLIENT_ID
    subscriptions = lease.shared(SUBSCRIPTIONS) if shared else SUBSCRIPTIONS
    try:
        service = PublisherService(log)
        transport = BusTransport(config, service, log, client_id=client_id, subscriptions=subscriptions)
    except (ValueError, StateError) as exc:
        log.error(kv(event="startup_failed", error=exc))
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stopping() -> None:
        log.info(kv(event="stopping"))  # how long a stop takes: from here to "stopped"
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping)
    if not shared:
        holder = lease.FileLease(config.run_dir / "publisher.lock")
        if not holder.try_acquire():
            log.info(kv(event="standby", active_pid=holder.holder()))
            if not await holder.acquire(stop):
                return 0
            log.info(kv(event="active", took_over=True))
    # The duplicate window of this session (client id), from its last run: see dedup.py.
    window_path = config.home / f"dedup-{client_id}.json"
    try:
        log.info(kv(event="dedup_loaded", devices=dedup.load(window_path, service.dedup)))
    except dedup.DedupFileError as exc:
        log.warning(kv(event="dedup_not_loaded", error=exc))
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

    log.info(kv(event="started", broker=f"{config.broker_host}:{config.mqtt_port}"))
    writer = asyncio.create_task(metrics_loop())
    try:
        await transport.run(stop)
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
    write_metrics()
    try:
        dedup.save(service.dedup, window_path)
    except OSError as exc:
        log.warning(kv(event="dedup_not_saved", error=exc))
    counts = {k: v for k, v in service.counters.snapshot().items() if k != "rejected"}
    log.info(kv(event="stopped", drained=int(transport.drained), **counts))
    return 0


def main() -> int:
    log = logs.setup("publisher")
    config = service_config("publisher")
    return asyncio.run(serve(config, log))


if __name__ == "__main__":
    sys.exit(main())
