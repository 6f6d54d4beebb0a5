"""Connections from an address in its refusal period start one at a time (pure; caller's clock).

Throttling refuses an address after too many unknown keys; behind a shared NAT that address
is also the good devices'. Instead of closing every connection at accept, the proxy gives
them start slots `grace` seconds apart in arrival order (at most `queue` waiting; beyond that
a connection is closed at accept as before). A guesser there gets at most one try per slot,
and a good device waits at most `queue * grace` seconds once it is queued (one slot behind a
guesser who tries one connection at a time: at most 2 * grace).
"""
from __future__ import annotations


class Probation:
    def __init__(self, grace: float, queue: int, max_entries: int = 100_000) -> None:
        self.grace = grace
        self.queue = queue
        self.max_entries = max_entries
        self._next: dict[str, float] = {}  # address -> when its next slot is free

    @property
    def enabled(self) -> bool:
        return self.grace > 0 and self.queue > 0

    def slot(self, address: str, now: float) -> float | None:
        """When a new connection from the refused `address` may start; None: refuse it now."""
        if not self.enabled:
            return None
        start = max(now, self._next.get(address, now))
        if start - now >= self.queue * self.grace:
            return None
        if address not in self._next and len(self._next) >= self.max_entries:
            self._next = {a: t for a, t in self._next.items() if t > now}
            if len(self._next) >= self.max_entries:
                return None
        self._next[address] = start + self.grace
        return start
