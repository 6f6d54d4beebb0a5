"""Which device addresses the public tree already shows (the retained address topics).

A device's source address and gateway change only when it connects anew, so the four
address topics are published (retained) with its first reading and again only when they
change, not with every reading (issue 13: a third of the public messages per reading).
Bounded like the duplicate window: past `max_devices`, the device seen first is forgotten,
which costs one extra (identical) retained publish when it sends again. A restarted
publisher starts empty and so publishes each device's addresses once more: harmless.
"""
from __future__ import annotations

Addresses = tuple[tuple[str, int], tuple[str, int]]  # (device source, gateway)


class LastAddresses:
    def __init__(self, max_devices: int = 100_000) -> None:
        if max_devices < 1:
            raise ValueError("max_devices must be positive")
        self.max_devices = max_devices
        self._last: dict[str, Addresses] = {}

    def changed(self, device: str, addresses: Addresses) -> bool:
        """True (and remember them) if `addresses` are not what was last published for device."""
        if self._last.get(device) == addresses:
            return False
        if device not in self._last and len(self._last) >= self.max_devices:
            del self._last[next(iter(self._last))]  # dict order is insertion order
        self._last[device] = addresses
        return True

    def __len__(self) -> int:
        return len(self._last)
