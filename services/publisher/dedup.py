"""Duplicate detection: a bounded window of recent readings per device, kept across restarts.

Duplicates reach the publisher when the proxy re-publishes after a lost PUBACK,
when the broker redelivers after a reconnect, or when a v2 device resends a
reading it got no acknowledgement for (its proxy or auth restarted between the
bus and the device). They arrive close to the original, so a window of the last
`window` readings per device suffices. Each entry is a stable 64-bit digest in
an array (8 bytes), so 10,000 devices cost about 10 MB at the default size.

The window is saved when the publisher stops and loaded when it starts
(`save`, `load`): a resend that arrives after a publisher restart is still
recognised. (After a crash the window starts empty: such a resend is published
again, the documented at-least-once case.)
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from array import array
from pathlib import Path

_ITEM = array("q").itemsize


def stable_digest(key: tuple[object, ...]) -> int:
    """The same 64-bit number in every process (hash() of a str changes from one process to the next)."""
    return int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), "little", signed=True)


def _holds(hashes: array, digest: int) -> bool:
    """`digest in hashes`, searched as bytes: `in` makes an int of every entry (5 % of the
    publisher's CPU, issue 13). Only a match at an entry's start counts."""
    raw = hashes.tobytes()
    needle = digest.to_bytes(_ITEM, sys.byteorder, signed=True)
    at = raw.find(needle)
    while at > 0 and at % _ITEM:
        at = raw.find(needle, at + 1)
    return at >= 0


class RecentWindow:
    """Remembers the last `window` keys of each device, and at most `max_devices` devices."""

    def __init__(self, window: int = 128, max_devices: int = 100_000) -> None:
        if window < 1 or max_devices < 1:
            raise ValueError("window and max_devices must be positive")
        self.window = window
        self.max_devices = max_devices
        self._seen: dict[str, tuple[array, list[int]]] = {}

    def seen(self, device: str, key: tuple[object, ...]) -> bool:
        """True if (device, key) is in the window; otherwise remember it and return False."""
        return self._remember(device, stable_digest(key))

    def _remember(self, device: str, digest: int) -> bool:
        entry = self._seen.get(device)
        if entry is None:
            if len(self._seen) >= self.max_devices:
                # Forget the device that was first added: dict order is insertion order.
                del self._seen[next(iter(self._seen))]
            entry = (array("q"), [0])
            self._seen[device] = entry
        hashes, cursor = entry
        if _holds(hashes, digest):
            return True
        if len(hashes) < self.window:
            hashes.append(digest)
        else:
            hashes[cursor[0]] = digest
            cursor[0] = (cursor[0] + 1) % self.window
        return False

    def __len__(self) -> int:
        return len(self._seen)

    # --- across restarts ---
    def snapshot(self) -> dict[str, list[int]]:
        """Each device's digests, oldest first."""
        return {device: list(hashes[cursor[0]:]) + list(hashes[:cursor[0]])
                for device, (hashes, cursor) in self._seen.items()}

    def restore(self, snapshot: dict[str, list[int]]) -> None:
        for device, digests in snapshot.items():
            for digest in digests[-self.window:]:
                self._remember(device, digest)


class DedupFileError(ValueError):
    """A saved window that cannot be used: the publisher starts with an empty one (and says so)."""


def save(window: RecentWindow, path: Path) -> None:
    """Write the window atomically (0600: device ids are not for everyone)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(window.snapshot(), f, separators=(",", ":"))
    os.replace(tmp, path)


def load(path: Path, window: RecentWindow) -> int:
    """Fill `window` from `path`; the number of devices loaded (0 without a file). DedupFileError if the
    file is not a saved window."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DedupFileError(f"{path.name}: {type(exc).__name__}") from None
    if not isinstance(data, dict) or not all(isinstance(d, str) and _digests(v) for d, v in data.items()):
        raise DedupFileError(f"{path.name}: not a saved duplicate window")
    window.restore(data)
    return len(data)


def _digests(value: object) -> bool:
    return isinstance(value, list) and all(type(x) is int and -2**63 <= x < 2**63 for x in value)
