"""`python -m services.publisher`: internal bus -> public topic tree."""
from __future__ import annotations

import signal
import sys
import threading

from services.common import logs
from services.common.config import Config
from services.common.logs import kv
from services.common.state import StateError
from services.publisher import metrics
from services.publisher.service import PublisherService
from services.publisher.transport import BusTransport

METRICS_INTERVAL = 2.0


def main() -> int:
    log = logs.setup("publisher")
    try:
        config = Config.from_env()
        service = PublisherService(log)
        transport = BusTransport(config, service, log)
    except (ValueError, StateError) as exc:
        log.error(kv(event="startup_failed", error=exc))
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    metrics_path = config.run_dir / "metrics-publisher.prom"
    transport.start()
    log.info(kv(event="started", broker=f"{config.host}:{config.mqtt_port}"))

    def write_metrics() -> None:
        try:
            text = metrics.render(service.counters.snapshot(), transport.connected.is_set())
            metrics.write(metrics_path, text)
        except OSError as exc:
            log.warning(kv(event="metrics_write_failed", error=exc))

    while not stop.wait(METRICS_INTERVAL):
        write_metrics()
    drained = transport.stop()
    write_metrics()
    log.info(kv(event="stopped", drained=int(drained), **{k: v for k, v in service.counters.snapshot().items()
                                                           if k != "rejected"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
