"""Failed-identification throttling per source address (pure; the caller passes the clock).

After `failures` unknown keys from one address within `window` seconds the
address is refused for `cooldown` seconds; each further block doubles the
cooldown up to `max_cooldown`. An address that stays quiet for `max_cooldown`
starts over. The table is bounded: the stalest entries go first.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class _Entry:
    failures: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0
    strikes: int = 0
    last_seen: float = 0.0


@dataclass(frozen=True)
class Block:
    """A block that just started: what the event and the log line say."""

    address: str
    seconds: float
    strikes: int


class Throttle:
    def __init__(self, failures: int, window: float, cooldown: float, max_cooldown: float,
                 max_entries: int = 100_000) -> None:
        self.failures = failures
        self.window = window
        self.cooldown = cooldown
        self.max_cooldown = max(max_cooldown, cooldown)
        self.max_entries = max_entries
        self._table: dict[str, _Entry] = {}

    @property
    def enabled(self) -> bool:
        return self.failures > 0

    def blocked(self, address: str, now: float) -> bool:
        entry = self._table.get(address)
        return entry is not None and now < entry.blocked_until

    def failure(self, address: str, now: float) -> Block | None:
        """Count one failed identification; returns the block it starts, if any."""
        if not self.enabled:
            return None
        entry = self._table.get(address)
        if entry is None:
            self._make_room()
            entry = self._table[address] = _Entry()
        elif now - max(entry.last_seen, entry.blocked_until) > self.max_cooldown:
            entry.strikes = 0  # quiet for a long while after its last block: start over
        entry.last_seen = now
        if now < entry.blocked_until:
            return None  # already refused; a connection accepted just before the block
        entry.failures.append(now)
        while entry.failures and entry.failures[0] <= now - self.window:
            entry.failures.popleft()
        if len(entry.failures) < self.failures:
            return None
        seconds = min(self.cooldown * (2 ** entry.strikes), self.max_cooldown)
        entry.strikes += 1
        entry.blocked_until = now + seconds
        entry.failures.clear()
        return Block(address, seconds, entry.strikes)

    def _make_room(self) -> None:
        if len(self._table) < self.max_entries:
            return
        stalest = sorted(self._table, key=lambda a: self._table[a].last_seen)
        for address in stalest[: self.max_entries // 10 + 1]:
            del self._table[address]
