"""Per-device reading rate limit: a token bucket per device (pure; the caller passes the clock).

A device may send `rate` readings per second sustained and `burst` at once, over all its
connections on this proxy. v1 has no freshness, so a replayed or spliced legacy stream is new
to every other check: this bounds what it can publish. The table is bounded: when full, the
devices not heard from the longest are forgotten (they start again with a full bucket).
"""
from __future__ import annotations


class DeviceRateLimit:
    def __init__(self, rate: float, burst: int, max_devices: int = 100_000) -> None:
        self.rate = rate
        self.burst = max(1.0, float(burst))
        self.max_devices = max_devices
        self._buckets: dict[str, list[float]] = {}  # device -> [tokens, last update]

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def allow(self, device: str, now: float) -> bool:
        """Take one token for a reading of `device`; False means drop the reading."""
        if not self.enabled:
            return True
        bucket = self._buckets.pop(device, None)  # re-inserted below: dict order = least recent first
        if bucket is None:
            self._make_room()
            bucket = [self.burst, now]
        tokens = min(self.burst, bucket[0] + max(0.0, now - bucket[1]) * self.rate)
        allowed = tokens >= 1.0
        bucket[0], bucket[1] = (tokens - 1.0 if allowed else tokens), now
        self._buckets[device] = bucket
        return allowed

    def _make_room(self) -> None:
        if len(self._buckets) < self.max_devices:
            return
        for device in list(self._buckets)[: self.max_devices // 10 + 1]:
            del self._buckets[device]
