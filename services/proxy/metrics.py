"""The proxy's counters, rendered as Prometheus text (written to run/metrics-proxy.prom)."""
from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path


class Metrics:
    def __init__(self) -> None:
        self.connections_total = 0
        self.readings_accepted = 0
        self.refused = Counter[str]()  # closed at accept: throttled, too_many_connections
        self.closed = Counter[str]()  # by close reason
        self.rejected = Counter[str]()  # by rejection reason
        self.dropped = Counter[str]()  # readings not published, connection kept: replay, rate_limited
        self.duplicate_sessions = 0  # devices seen on two connections at once
        self.probation = 0  # connections of a refused address let in on a start slot
        self.identify = [0.0, 0]  # seconds sum, count: first byte to identified device
        self.auth = [0.0, 0]  # auth round trips
        self.publish = [0.0, 0]  # publish to PUBACK
        self.events_dropped = 0
        self.bus_messages = 0  # ingest messages on the bus: readings_accepted / this = readings per batch
        self._last = (time.monotonic(), 0)
        self.rate = 0.0

    def observe(self, pair: list, seconds: float, count: int = 1) -> None:
        """`count` events that each took `seconds`."""
        pair[0] += seconds * count
        pair[1] += count

    def tick(self) -> None:
        """Update readings/s over the time since the last tick."""
        now = time.monotonic()
        then, count = self._last
        if now > then:
            self.rate = (self.readings_accepted - count) / (now - then)
        self._last = (now, self.readings_accepted)

    def render(self, open_connections: int, devices: int) -> str:
        p = "medsec_proxy_"
        lines = [
            f"# TYPE {p}connections_open gauge", f"{p}connections_open {open_connections}",
            f"# TYPE {p}devices_connected gauge", f"{p}devices_connected {devices}",
            f"# TYPE {p}connections_total counter", f"{p}connections_total {self.connections_total}",
            f"# TYPE {p}readings_accepted_total counter",
            f"{p}readings_accepted_total {self.readings_accepted}",
            f"# TYPE {p}readings_per_second gauge", f"{p}readings_per_second {self.rate:.3f}",
            f"# TYPE {p}events_dropped_total counter", f"{p}events_dropped_total {self.events_dropped}",
            f"# TYPE {p}bus_messages_total counter", f"{p}bus_messages_total {self.bus_messages}",
            f"# TYPE {p}duplicate_sessions_total counter",
            f"{p}duplicate_sessions_total {self.duplicate_sessions}",
            f"# TYPE {p}probation_total counter", f"{p}probation_total {self.probation}",
        ]
        by_reason = (("refused", self.refused), ("closed", self.closed), ("rejected", self.rejected),
                     ("dropped", self.dropped))
        for name, counter in by_reason:
            lines.append(f"# TYPE {p}{name}_total counter")
            lines.extend(f'{p}{name}_total{{reason="{reason}"}} {n}' for reason, n in sorted(counter.items()))
        for name, (total, count) in (("identify", self.identify), ("auth", self.auth),
                                      ("publish", self.publish)):
            lines += [f"# TYPE {p}{name}_seconds summary",
                      f"{p}{name}_seconds_sum {total:.6f}", f"{p}{name}_seconds_count {count}"]
        return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
