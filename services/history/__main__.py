"""`python -m services.history`: store the published readings (SQLite or PostgreSQL)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from services.common import logs
from services.common.config import Config, service_config
from services.common.logs import kv
from services.common.state import StateError
from services.history import metrics
from services.history.service import HistoryService
from services.history.store import HistoryStoreError, describe_url, open_history
from services.history.transport import HistoryTransport

DRAIN = 5.0
METRICS_INTERVAL = 2.0


async def serve(config: Config, log: logging.Logger) -> int:
    try:
        transport = HistoryTransport(config, log)
        store = await asyncio.to_thread(open_history, config)
    except (StateError, HistoryStoreError) as exc:
        log.error(kv(event="startup_failed", error=exc))
        return 1
    service = HistoryService(store, transport.ack, log, raw_days=config.history_raw_days,
                             agg_days=config.history_agg_days, live=transport.live)
    transport.take = service.take
    stop, bus_stop = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics_path = config.run_dir / "metrics-history.prom"

    def write_metrics() -> None:
        try:
            text = metrics.render(service.counters.snapshot(), transport.client.connected)
            metrics.write(metrics_path, text)
        except OSError as exc:
            log.warning(kv(event="metrics_write_failed", error=exc))

    async def metrics_loop() -> None:
        while not stop.is_set():
            await asyncio.sleep(METRICS_INTERVAL)
            write_metrics()

    where = describe_url(config.history_url) if config.history_url else str(config.history_path.name)
    log.info(kv(event="started", broker=f"{config.broker_host}:{config.mqtt_port}", store=where,
                raw_days=config.history_raw_days, agg_days=config.history_agg_days))
    bus = asyncio.create_task(transport.client.run(bus_stop), name="history-bus")
    tasks = [asyncio.create_task(service.run_writer(stop), name="history-writer"),
             asyncio.create_task(service.run_pruner(stop), name="history-pruner"),
             asyncio.create_task(metrics_loop(), name="history-metrics")]
    await stop.wait()
    # Drain: take nothing new (it stays with the broker), store and acknowledge what was taken,
    # then let the client send those acknowledgements and disconnect.
    transport.stop_intake()
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    drained = await service.drain(DRAIN)
    bus_stop.set()
    await bus
    await asyncio.to_thread(store.close)
    write_metrics()
    snap = service.counters.snapshot()
    log.info(kv(event="stopped", drained=int(drained), stored=snap["stored"], copies=snap["copies"]))
    return 0


def main() -> int:
    log = logs.setup("history")
    return asyncio.run(serve(service_config("history"), log))


if __name__ == "__main__":
    sys.exit(main())
