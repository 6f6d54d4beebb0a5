"""The one shape every refusal in medsec takes: a stable `reason` code and a human `detail`.

Each codec and service subclasses it under its own name, so callers catch exactly
what they expect, and one place turns `reason` into a log line, an event or a metric.
"""
from __future__ import annotations


class ReasonError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
