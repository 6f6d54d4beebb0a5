"""Active/standby for publishers on Mosquitto: one holds the lease, the others wait for it.

With Mosquitto the publisher is a single persistent session (fixed client id):
two live instances would take the session from each other in turns, and
Mosquitto strands the queued messages of offline shared-subscription members
(eclipse/mosquitto#1747), so shared subscriptions are no way out there. The
lease is an exclusive lock on a file in the state dir's run/: the kernel drops
it the moment its holder dies, however it dies, and a standby polling for it
takes over the same session (and the messages the broker kept for it) within
a poll interval. Instances on one machine share the state dir; with EMQX use
shared subscriptions instead (MEDSEC_PUBLISHER_SHARED=1), no lease.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from pathlib import Path


class FileLease:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    async def acquire(self, stop: asyncio.Event, interval: float = 0.1) -> bool:
        """Wait for the lease; False when `stop` is set first."""
        while not stop.is_set():
            if self.try_acquire():
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
        return False

    def holder(self) -> int | None:
        """The pid written by the current holder, if any (for logs)."""
        try:
            return int(self.path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None


def shared(subscriptions: list[tuple[str, int]], group: str = "publishers") -> list[tuple[str, int]]:
    """The same subscriptions as MQTT shared subscriptions of `group` (EMQX deployments)."""
    return [(f"$share/{group}/{topic}", qos) for topic, qos in subscriptions]
