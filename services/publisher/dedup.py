"""Duplicate detection: a bounded window of recent readings per device.

Duplicates reach the publisher when the proxy re-publishes after a lost PUBACK,
when the broker redelivers after a reconnect, or when a v2 device resends an
unacknowledged reading. They arrive close to the original, so a window of
the last `window` readings per device suffices. Each entry is a 64-bit hash
in an array (8 bytes), so 10,000 devices cost about 10 MB at the default size.
"""
from __future__ import annotations

from array import array


class RecentWindow:
    """Remembers the last `window` keys of each device, and at most `max_devices` devices."""

    def __init__(self, window: int = 128, max_devices: int = 100_000) -> None:
        if window < 1 or max_devices < 1:
            raise ValueError("window and max_devices must be positive")
        self.window = window
        self.max_devices = max_devices
        self._seen: dict[str, tuple[array, list[int]]] = {}

    def seen(self, device: str, key: object) -> bool:
        """True if (device, key) is in the window; otherwise remember it and return False."""
        digest = hash(key)
        entry = self._seen.get(device)
        if entry is None:
            if len(self._seen) >= self.max_devices:
                # Forget the device that was first added: dict order is insertion order.
                del self._seen[next(iter(self._seen))]
            entry = (array("q"), [0])
            self._seen[device] = entry
        hashes, cursor = entry
        if digest in hashes:
            return True
        if len(hashes) < self.window:
            hashes.append(digest)
        else:
            hashes[cursor[0]] = digest
            cursor[0] = (cursor[0] + 1) % self.window
        return False

    def __len__(self) -> int:
        return len(self._seen)
