"""Name lookups the resolver could not answer *now*.

Podman's resolver (aardvark-dns 1.4) rebuilds its servers on every container start or stop and
drops the queries that arrive meanwhile: glibc then reports EAI_AGAIN ("Temporary failure in name
resolution") for a name that exists. Nothing was sent to the peer yet, so asking again is safe for
any request, a POST included. A name that does not exist (EAI_NONAME) still fails at once.
"""
from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

GRACE = 30.0  # seconds a client keeps asking: gaps of up to 26 s were seen after a broker restart
INTERVAL = 0.2

T = TypeVar("T")


def is_temporary(exc: BaseException) -> bool:
    """True for EAI_AGAIN, raised directly or wrapped in urllib's URLError."""
    reason = getattr(exc, "reason", exc)
    return isinstance(reason, socket.gaierror) and reason.errno == socket.EAI_AGAIN


def retrying(action: Callable[[], T], grace: float = GRACE) -> T:
    """action(), asked again while its lookups fail temporarily, for at most `grace` seconds."""
    deadline = time.monotonic() + grace
    while True:
        try:
            return action()
        except OSError as exc:
            if not is_temporary(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(INTERVAL)
