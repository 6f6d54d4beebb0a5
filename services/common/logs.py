"""Logging: one line per event, `key=value` fields, to stderr (supervisord files it)."""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable


def setup(service: str, level: str = "INFO") -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return logging.getLogger(f"medsec.{service}")


def kv(**fields: object) -> str:
    """Format fields for a log line; values with spaces are quoted. Never pass secrets here."""
    parts = []
    for key, value in fields.items():
        text = str(value)
        if not text or any(c in text for c in ' "='):
            text = '"' + text.replace('"', "'") + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


class Throttled:
    """A warning that comes in storms (one per request while a dependency is away): at most one
    line per `seconds`; the next line says how many were left out (`left_out=`)."""

    def __init__(self, log: logging.Logger, seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log, self._seconds, self._clock = log, seconds, clock
        self._next = 0.0
        self._left_out = 0

    def warning(self, **fields: object) -> None:
        now = self._clock()
        if now < self._next:
            self._left_out += 1
            return
        if self._left_out:
            fields["left_out"] = self._left_out
        self._log.warning(kv(**fields))
        self._left_out, self._next = 0, now + self._seconds
