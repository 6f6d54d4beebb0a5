"""What v1 allows against replay: recently seen readings per device, and strikes per connection.

v1 has no counter or timestamp, and its IV is static: the same reading text under the same key
and variant always gives the same ciphertext. So a byte-identical reading is the only replay the
gateway can see. `ReplayMemory` remembers a fingerprint of each reading's ciphertext blocks (a
64-bit hash; equal ciphertext means equal text for one device, and an attacker without the key
cannot re-encrypt a reading in the other variant) for `window` seconds. A real device's pulse
signal and accelerometer carry noise in the last decimal, so two equal readings within minutes
do not happen while its sensors work; a device whose every sensor is stuck looks like a replay.
What v1 cannot see: a replay older than the window, blocks of sniffed readings spliced into
new ones (the per_block variant encrypts blocks independently), or a replay sent to another
proxy instance; the per-device rate limit bounds all of these.

`DuplicateGuard` counts, per connection, the duplicates that no honest device sends: every
replayed v1 reading; for v2, a duplicate seq (already acknowledged) that is not part of the
resend a device makes after a reconnect (its unacknowledged readings again, oldest first, so
with growing seqs, at most a replay window of them). Pure classes; the caller passes the clock.
"""
from __future__ import annotations

from array import array

# A v2 device keeps at most this many unacknowledged readings (services/common/v2.ReplayWindow).
V2_RESEND = 64


class ReplayMemory:
    """Fingerprints of each device's readings for `window` seconds (at most `per_device`)."""

    def __init__(self, window: float, per_device: int = 1024, max_devices: int = 100_000) -> None:
        self.window = window
        self.per_device = per_device
        self.max_devices = max_devices
        self._devices: dict[str, _Recent] = {}

    @property
    def enabled(self) -> bool:
        return self.window > 0

    def seen(self, device: str, fingerprint: int, now: float) -> bool:
        """True if the device sent this reading within the window; otherwise remember it."""
        if not self.enabled:
            return False
        recent = self._devices.pop(device, None)  # re-inserted below: dict order = least recent first
        if recent is None:
            if len(self._devices) >= self.max_devices:
                del self._devices[next(iter(self._devices))]
            recent = _Recent()
        self._devices[device] = recent
        return recent.seen(fingerprint, now, self.window, self.per_device)


class _Recent:
    """One device's fingerprints of the window, oldest first, 17 bytes a reading.

    A lookup scans one of BUCKETS byte strings (the prints whose low bits pick it), not all of
    them: a device at 10 readings/s fills `per_device` (1,024) in under two minutes, and a scan
    of all 1,024 per reading cost the proxy 20 us of every v1 reading (issue 13). Prints leave a
    bucket in the order they came, so the oldest reading's print is always its bucket's first."""

    __slots__ = ("times", "order", "start", "buckets")
    BUCKETS = 16

    def __init__(self) -> None:
        self.times = array("d")  # when each reading came, oldest first
        self.order = bytearray()  # the bucket of each reading's print, in the same order
        self.start = 0  # the oldest reading still remembered
        self.buckets = [bytearray() for _ in range(self.BUCKETS)]  # 8-byte prints, oldest first

    def seen(self, fingerprint: int, now: float, window: float, limit: int) -> bool:
        times, start = self.times, self.start
        while start < len(times) and (times[start] <= now - window or len(times) - start >= limit):
            del self.buckets[self.order[start]][:8]
            start += 1
        if start > 64 and start * 2 > len(times):
            del times[:start]
            del self.order[:start]
            start = 0
        self.start = start
        key = fingerprint.to_bytes(8, "little", signed=True)
        which = fingerprint % self.BUCKETS
        bucket = self.buckets[which]
        at = bucket.find(key)
        while at != -1:
            if at % 8 == 0:
                return True
            at = bucket.find(key, at + 1)  # straddles two prints: look on
        bucket += key
        times.append(now)
        self.order.append(which)
        return False


class DuplicateGuard:
    """Strikes of one connection; `duplicate()` says when it has sent `limit` of them (0: never)."""

    def __init__(self, limit: int, resend: int = V2_RESEND) -> None:
        self.limit = limit
        self.resend = resend
        self.strikes = 0
        self.forgiven = 0
        self._highest: int | None = None

    def fresh(self, seq: int | None) -> None:
        """A reading that was new: a v2 seq sets the order a resend must follow."""
        if seq is not None:
            self._highest = seq if self._highest is None else max(self._highest, seq)

    def duplicate(self, seq: int | None) -> bool:
        """Count one duplicate (seq None: a replayed v1 reading); True when the connection must close."""
        resending = seq is not None and (self._highest is None or seq > self._highest)
        if resending and self.forgiven < self.resend:
            self.forgiven += 1
        else:
            self.strikes += 1
        self.fresh(seq)
        return self.limit > 0 and self.strikes >= self.limit
