"""Duplicate detection per device, kept across restarts.

Duplicates reach the publisher when the proxy re-publishes after a lost PUBACK,
when the broker redelivers after a reconnect, or when a v2 device resends a
reading it got no acknowledgement for (its proxy or auth restarted between the
bus and the device).

- v2 readings carry the device's sequence number: `SeqWindow` remembers, per
  device and key generation, which of the last SEQ_WINDOW seqs were published
  (one bit each). A resend is recognised however many other readings came in
  between: during a bus outage each proxy holds what its devices send and
  delivers it when the broker is back, one proxy's backlog after the other's,
  so a device's two copies of a reading can be hundreds of its readings apart.
- v1 readings are told apart by the proxy's uid, and their duplicates (a
  proxy's re-publish, the broker's redelivery) arrive close to the original:
  `RecentWindow` keeps the last `window` of them per device, each a stable
  64-bit digest in an array (8 bytes).

The windows are saved when the publisher stops and loaded when it starts
(`save`, `load`): a resend that arrives after a publisher restart is still
recognised. (After a crash the windows start empty: such a resend is published
again, the documented at-least-once case.)
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from array import array
from pathlib import Path

_ITEM = array("q").itemsize
# Seqs remembered per device and key generation: 512 bytes; 6.8 minutes of a device at 10 readings/s.
SEQ_WINDOW = 4096
_SEQ_BITS = (1 << SEQ_WINDOW) - 1
_BITS_HEX = re.compile(f"[0-9a-f]{{1,{SEQ_WINDOW // 4}}}")  # a saved window's bits


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


class SeqWindow:
    """Which of the last SEQ_WINDOW seqs of each (device, key generation) were seen, as one
    integer of bits (bit i: seq `newest - i`), for at most `max_entries` of them."""

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._seen: dict[tuple[str, int | None], list[int]] = {}  # (device, gen) -> [newest, bits]

    def seen(self, device: str, gen: int | None, seq: int) -> bool:
        """True if this seq of (device, gen) was seen; otherwise remember it and return False. A seq
        older than the window cannot be told apart from a new one: False (published again)."""
        entry = self._seen.get((device, gen))
        if entry is None:
            self._add((device, gen), seq, 1)
            return False
        newest, bits = entry
        if seq > newest:
            ahead = seq - newest
            entry[0], entry[1] = seq, ((bits << ahead) | 1) & _SEQ_BITS if ahead < SEQ_WINDOW else 1
            return False
        back = newest - seq
        if back >= SEQ_WINDOW:
            return False
        if bits >> back & 1:
            return True
        entry[1] = bits | 1 << back
        return False

    def __len__(self) -> int:
        return len(self._seen)

    def snapshot(self) -> list[list[object]]:
        """[device, gen, newest seq, bits as hex] of each entry, the first added first."""
        return [[device, gen, newest, format(bits, "x")]
                for (device, gen), (newest, bits) in self._seen.items()]

    def restore(self, snapshot: list[list[object]]) -> None:
        for device, gen, newest, bits in snapshot:
            self._add((device, gen), newest, int(bits, 16))

    def _add(self, key: tuple[str, int | None], newest: int, bits: int) -> None:
        if len(self._seen) >= self.max_entries:
            del self._seen[next(iter(self._seen))]  # the first added
        self._seen[key] = [newest, bits]


class DuplicateWindow:
    """The publisher's duplicate check: v2 readings by seq (`SeqWindow`), v1 ones by the proxy's
    uid (`RecentWindow`); keys as `Ingest.dedup_key` gives them."""

    def __init__(self, recent: RecentWindow | None = None, seqs: SeqWindow | None = None) -> None:
        # `is None`, not `or`: an empty window has no length, so it is false.
        self.recent = RecentWindow() if recent is None else recent
        self.seqs = SeqWindow() if seqs is None else seqs

    def seen(self, device: str, key: tuple[object, ...]) -> bool:
        if key[0] == "seq":
            _, gen, seq = key
            return self.seqs.seen(device, gen, seq)  # type: ignore[arg-type]
        return self.recent.seen(device, key)

    def __len__(self) -> int:
        """Devices (and key generations) remembered."""
        return len(self.recent) + len(self.seqs)


class DedupFileError(ValueError):
    """A saved window that cannot be used: the publisher starts with an empty one (and says so)."""


def save(window: DuplicateWindow, path: Path) -> None:
    """Write the windows atomically (0600: device ids are not for everyone)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"recent": window.recent.snapshot(), "seqs": window.seqs.snapshot()}, f,
                  separators=(",", ":"))
    os.replace(tmp, path)


def load(path: Path, window: DuplicateWindow) -> int:
    """Fill `window` from `path`; the number of entries loaded (0 without a file). DedupFileError if the
    file is not saved windows. A file of an earlier version (the uid/digest window alone) loads
    into `recent`."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DedupFileError(f"{path.name}: {type(exc).__name__}") from None
    if isinstance(data, dict) and set(data) == {"recent", "seqs"}:
        recent, seqs = data["recent"], data["seqs"]
    else:
        recent, seqs = data, []
    if not _recent(recent) or not isinstance(seqs, list) or not all(map(_seq_entry, seqs)):
        raise DedupFileError(f"{path.name}: not a saved duplicate window")
    window.recent.restore(recent)
    window.seqs.restore(seqs)
    return len(recent) + len(seqs)


def _recent(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(d, str) and _digests(v) for d, v in value.items())


def _digests(value: object) -> bool:
    return isinstance(value, list) and all(type(x) is int and -2**63 <= x < 2**63 for x in value)


def _seq_entry(value: object) -> bool:
    """[device, gen (int or null), newest seq (int >= 0), bits (hex of at most SEQ_WINDOW bits)]."""
    if not isinstance(value, list) or len(value) != 4:
        return False
    device, gen, newest, bits = value
    return (isinstance(device, str) and (gen is None or type(gen) is int) and type(newest) is int
            and newest >= 0 and isinstance(bits, str) and _BITS_HEX.fullmatch(bits) is not None)
