"""Bursts of failed identifications per source address, for the audit log.

The proxy throttles the address; auth records that the burst happened (who
tried how many keys, when), once per window, so the audit log shows
brute-force attempts without one entry per guess.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

MAX_SOURCES = 10_000


@dataclass
class _Source:
    times: deque[float] = field(default_factory=deque)
    reasons: dict[str, int] = field(default_factory=dict)
    reported_until: float = 0.0


class BurstDetector:
    def __init__(self, threshold: int = 10, window: float = 60.0, max_sources: int = MAX_SOURCES) -> None:
        self.threshold = max(1, threshold)
        self.window = window
        self._max = max_sources
        self._sources: OrderedDict[str, _Source] = OrderedDict()

    def failure(self, src: str, reason: str, now: float) -> dict[str, Any] | None:
        """Count one failure; return a summary when `src` reaches the threshold (once per window)."""
        source = self._sources.pop(src, None) or _Source()
        self._sources[src] = source  # most recent last
        while len(self._sources) > self._max:
            self._sources.popitem(last=False)
        while source.times and source.times[0] <= now - self.window:
            source.times.popleft()
        if not source.times:
            source.reasons.clear()
        source.times.append(now)
        source.reasons[reason] = source.reasons.get(reason, 0) + 1
        if len(source.times) >= self.threshold and now >= source.reported_until:
            source.reported_until = now + self.window
            return {"src": src, "failures": len(source.times), "window": self.window,
                    "reasons": dict(source.reasons)}
        return None


def source_address(src: object) -> str:
    """'ip:port' (or '[v6]:port') -> the address alone; anything else as given (bounded)."""
    text = str(src)[:64]
    host, sep, port = text.rpartition(":")
    return host.strip("[]") if sep and port.isdigit() else text
