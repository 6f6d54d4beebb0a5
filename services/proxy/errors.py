"""The few exceptions of the proxy; one place (connection.py) turns them into a closed connection."""
from __future__ import annotations

# Close reasons that are not a fault of the device: logged at INFO, no "rejected" event
# for an identified device (its "disconnect" event carries the reason).
NORMAL_CLOSE = frozenset({"eof", "reset", "idle_timeout", "shutdown"})


class Reject(Exception):
    """Close the connection for `reason` (a short stable code used in logs, events and metrics)."""

    def __init__(self, reason: str, detail: str = "", device: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.device = device


class AuthUnavailable(Reject):
    """The auth service did not answer (down, restarting, or too slow); nothing was published."""

    def __init__(self, detail: str) -> None:
        super().__init__("auth_unavailable", detail)


class BusUnavailable(Reject):
    """The internal bus did not take a reading in time (broker down or queue full)."""

    def __init__(self, detail: str) -> None:
        super().__init__("bus_unavailable", detail)
