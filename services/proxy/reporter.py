"""At most one log line and one event per (device, reason) per interval (pure; caller's clock).

A flood of dropped readings must not become a flood of log lines and events: the first one
is reported at once, the rest are counted and reported with the next line.
"""
from __future__ import annotations


class Reporter:
    def __init__(self, interval: float = 5.0, max_keys: int = 100_000) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._keys: dict[tuple[str, str], list[float]] = {}  # key -> [last report, count since]

    def due(self, device: str, reason: str, now: float) -> int | None:
        """Count one occurrence; returns how many to report now (this one included), or None."""
        key = (device, reason)
        entry = self._keys.get(key)
        if entry is None:
            if len(self._keys) >= self.max_keys:
                del self._keys[next(iter(self._keys))]
            self._keys[key] = [now, 0.0]
            return 1
        entry[1] += 1
        if now - entry[0] < self.interval:
            return None
        count = int(entry[1])
        entry[0], entry[1] = now, 0.0
        return count
