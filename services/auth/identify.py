"""v1 identification: which registered key decrypts a connection's first block.

v1 readings carry no device id: the device is the one whose key turns block 0
into '{"Temp":"' + 7 bytes. `V1Keys` holds the v1 credentials ready for that
test (an AES context per key) and answers it for one block (`identify`), many
blocks in one pass over the keys (`identify_many`, `identify_batch`). It never
picks: every credential a block matches is returned (revoked and expired ones
too), and the caller decides by the whole first reading (service.py).

A pass costs one AES decryption per key. From Python each is an OpenSSL call
whose overhead dominates (~0.25 us: one block under 10,000 keys is ~2.5 ms), so
`KeyScan` runs the loop over the keys in C (_keyscan.c): with the CPU's AES
instructions ~6 ns a key (~0.06 ms for 10,000 keys), else through OpenSSL ~40 ns.
Where it was not built, the loop is a C-level `map` with one big-integer
comparison for all keys. A pass for many blocks (a burst of new connections) can
go in steps (`identify_batch_steps`), so that the auth loop serves its other
clients in between.
"""
from __future__ import annotations

import operator
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, TypeVar

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from services.common import v1
from services.keystore.models import Credential

try:  # the compiled key loop (setup.py builds it where a C compiler and OpenSSL's headers are)
    from services.auth import _keyscan
except ImportError:  # the same answers from the loop in Python, ~10x slower
    _keyscan = None

# Block 0 decrypts to '{"Temp":"' + 7 bytes under the right key in both variants.
_PREFIX = v1.FIRST_BLOCK_PREFIX
_HEAD = len(_PREFIX)
_TAIL = v1.BLOCK - _HEAD
_NONE_DIFFER = bytes(_HEAD)  # the 9 head bytes of a block whose key matches, in KeyScan.one
# A pass over the keys for many first blocks goes in steps of about STEP_WORK block decryptions
# (~0.3 ms with AES-NI, ~3 ms through OpenSSL): the auth loop serves its other clients between two
# steps. A key costs about KEY_COST blocks' worth on its own (its round keys, the search).
STEP_WORK = 80_000
KEY_COST = 16
T = TypeVar("T")


@dataclass(eq=False)  # one object per credential: compared by identity
class Candidate:
    """One v1 credential ready for identification: a cached AES-ECB object and the expected block-0 prefix."""

    device_id: str
    generation: int
    ecb: Any
    key: bytes = field(repr=False)
    iv: bytes = field(repr=False)
    expected: bytes = field(repr=False)  # ECB-decrypted block 0 must start with this (prefix XOR iv)
    expires_at: float | None
    revoked: bool
    newest: bool
    overlapping: bool  # an older credential of the device is still valid: first use ends the overlap

    def valid(self, now: float) -> bool:
        return not self.revoked and (self.expires_at is None or self.expires_at > now)


@dataclass
class Identified:
    """A first-block identification done ahead of its request in one batched pass (identify_batch)."""

    keys: list[Candidate]  # the candidate list the pass ran over (a reload replaces it)
    matches: list[Candidate]  # every credential whose key matches block 0, whatever its state
    share: float  # this request's share of the pass's time
    seconds: float  # the whole pass


class _Ecb:
    """AES-ECB decryption as v1.BlockCipher: an OpenSSL context kept per key (ECB has no state
    between calls), about 0.3 us per block, so trying 10,000 keys on block 0 takes milliseconds."""

    __slots__ = ("decrypt",)

    def __init__(self, key: bytes) -> None:
        self.decrypt = Cipher(algorithms.AES(key), modes.ECB()).decryptor().update


def candidate(cred: Credential, newest: bool, overlapping: bool) -> Candidate:
    key = cred.secret["key"].encode()
    iv = cred.secret["iv"].encode()
    expected = bytes(a ^ b for a, b in zip(_PREFIX, iv, strict=False))
    return Candidate(cred.device_id, cred.generation, _Ecb(key), key, iv, expected,
                     cred.expires_at, cred.revoked, newest, overlapping)


class V1Keys:
    """The v1 candidates: `active` (not revoked; newest credentials first), `inactive` (revoked),
    and `every` (both, in that order): identification scans them all."""

    def __init__(self) -> None:
        self.by_cred: dict[tuple[str, int], Candidate] = {}
        self.active: list[Candidate] = []
        self.inactive: list[Candidate] = []
        self.every: list[Candidate] = []
        self._scanned: KeyScan | None = None
        self._alike: dict[tuple[bytes, bytes], list[Candidate]] = {}

    def load(self, creds: list[Credential], full: bool, now: float) -> None:
        """Take `creds` (every credential of the devices they name); `full`: they are all there are."""
        by_device: dict[str, list[Credential]] = {}
        for c in creds:
            by_device.setdefault(c.device_id, []).append(c)
        by_cred = {} if full else dict(self.by_cred)
        for device_creds in by_device.values():
            newest = max(c.generation for c in device_creds)
            overlapping = sum(1 for c in device_creds if c.valid(now)) > 1
            for c in device_creds:
                key = (c.device_id, c.generation)
                is_newest = c.generation == newest
                old = self.by_cred.get(key)
                if old is not None:  # keep the AES context: only the state may have changed
                    old.expires_at, old.revoked, old.newest = c.expires_at, c.revoked, is_newest
                    old.overlapping = is_newest and overlapping
                    by_cred[key] = old
                else:
                    by_cred[key] = candidate(c, is_newest, is_newest and overlapping)
        self.by_cred = by_cred
        # Newest credentials first: after a rotation the new key is the likely one.
        self.active = [c for c in by_cred.values() if c.newest and not c.revoked]
        self.active += [c for c in by_cred.values() if not c.newest and not c.revoked]
        self.inactive = [c for c in by_cred.values() if c.revoked]
        self.every = self.active + self.inactive
        # The credentials one block 0 matches together (same key and IV[:9]; a clash otherwise).
        self._alike: dict[tuple[bytes, bytes], list[Candidate]] = {}
        for cand in self.every:
            self._alike.setdefault((cand.key, cand.expected), []).append(cand)

    def clashes(self) -> list[list[Candidate]]:
        """Groups of credentials whose key and IV[:9] are equal: the same block 0 matches them all
        (the store refuses new ones; these come from before that check, or behind its back)."""
        return [g for g in self._alike.values() if len(g) > 1]

    def hinted(self, block0: bytes, hints: Iterable[Candidate]) -> list[Candidate] | None:
        """What `identify` finds, when block 0 matches one of `hints` (the credentials last identified
        from the connection's address): that credential and every one sharing its key and IV[:9]
        (a clash: the only credentials that match the same block 0 by construction). Another key
        matches a given block 0 by chance only (2^-72 a key), and the whole first reading would then
        have to decode validly under it too. None when no hint matches: scan them all."""
        for hint in hints:
            if (self.by_cred.get((hint.device_id, hint.generation)) is hint
                    and hint.ecb.decrypt(block0).startswith(hint.expected)):
                return list(self._alike[(hint.key, hint.expected)])
        return None

    def identify_many(self, block0s: list[bytes]) -> list[list[Candidate]]:
        """What `match(self.every, b)` finds for each block, in one pass over the keys."""
        return self._scan().many(block0s)

    def identify_batch(self, block0s: list[bytes]) -> list[Identified]:
        """Identify the first blocks of several new connections together (answered later by `identify`)."""
        return _last(self.identify_batch_steps(block0s))

    def identify_batch_steps(self, block0s: list[bytes]) -> Iterator[list[Identified] | None]:
        """`identify_batch` in steps of about STEP_WORK decryptions: None after each step but the last,
        then the results. Between steps the keys may be reloaded: the results then hold the list they
        were found in, and `identify` does not take them."""
        every = self.every
        busy = 0.0
        started = time.perf_counter()
        for found in self._scan().many_steps(block0s):
            busy += time.perf_counter() - started
            if found is None:
                yield None
                started = time.perf_counter()
                continue
            share = busy / max(1, len(block0s))
            yield [Identified(every, matches, share, busy) for matches in found]

    def identify(self, block0: bytes, pre: Identified | None = None) -> tuple[list[Candidate], float, float]:
        """(every credential block 0 matches, seconds spent on this block, seconds of the longest pass).

        Every credential, not the first hit: the caller decides among several by the whole reading
        (and by each one's state). A batched result stands if the keys were not reloaded since."""
        if pre is not None and pre.keys is self.every:
            return pre.matches, pre.share, pre.seconds
        started = time.perf_counter()
        found = self._scan().one(block0)
        elapsed = time.perf_counter() - started
        return found, elapsed, elapsed

    def _scan(self) -> KeyScan:
        """The scan of the current `every` list (built once per load, on first use)."""
        if self._scanned is None or self._scanned.candidates is not self.every:
            self._scanned = KeyScan(self.every)
        return self._scanned


class KeyScan:
    """`match` and `match_many` over a fixed candidate list, fast. With the compiled loop
    (_keyscan.c: AES-NI, else OpenSSL's AES; built at install where a C compiler is) a key costs
    ~6 ns (~40 ns without AES-NI).
    Without it: the decrypt functions in one list (the loop over the keys is a C-level map) and,
    for one block, the expected prefixes of all keys as one big integer: the decrypted blocks,
    joined, XOR it, masked to each block's 9 head bytes (the 7 others forced non-zero), have 9 zero
    bytes exactly where a key matches (~250 ns a key)."""

    def __init__(self, candidates: list[Candidate]) -> None:
        self.candidates = candidates
        self._decrypts = [c.ecb.decrypt for c in candidates]
        self._expected = [c.expected for c in candidates]
        self._exact = all(len(e) == _HEAD for e in self._expected)  # else `one` falls back to `match`
        self._compiled = None
        if self._exact and _keyscan is not None and all(len(c.key) == v1.BLOCK for c in candidates):
            self._compiled = _keyscan.Scanner(b"".join(c.key for c in candidates), b"".join(self._expected))
        elif self._exact:
            n = len(candidates)
            self._want = int.from_bytes(b"".join(e + bytes(_TAIL) for e in self._expected), "big")
            self._head = int.from_bytes((b"\xff" * _HEAD + bytes(_TAIL)) * n, "big")
            self._tail = int.from_bytes((bytes(_HEAD) + b"\x01" * _TAIL) * n, "big")

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def one(self, block0: bytes) -> list[Candidate]:
        """`match(self.candidates, block0)`: one OpenSSL call per key, one comparison for all."""
        if not self._exact or len(block0) != v1.BLOCK:
            return match(self.candidates, block0)
        if self._compiled is not None:
            return [self.candidates[i] for i in self._compiled.one(block0)]
        plain = b"".join(map(operator.call, self._decrypts, repeat(block0)))
        diff = ((int.from_bytes(plain, "big") ^ self._want) & self._head) | self._tail
        zeros = diff.to_bytes(len(plain), "big")
        found = []
        pos = zeros.find(_NONE_DIFFER)
        while pos >= 0:  # 9 zero bytes lie in one block's head only (the tails are 0x01): aligned
            found.append(self.candidates[pos // v1.BLOCK])
            pos = zeros.find(_NONE_DIFFER, pos + v1.BLOCK)
        return found

    def many(self, block0s: list[bytes]) -> list[list[Candidate]]:
        """`match_many(self.candidates, block0s)`: one OpenSSL call per key over all the blocks."""
        return _last(self.many_steps(block0s))

    def many_steps(self, block0s: list[bytes]) -> Iterator[list[list[Candidate]] | None]:
        """`many` over the keys in slices of about STEP_WORK decryptions: None after each slice but
        the last, then the results."""
        found: list[list[Candidate]] = [[] for _ in block0s]
        joined = b"".join(block0s)
        total = len(self.candidates) if block0s else 0
        step = max(1, STEP_WORK // (len(block0s) + KEY_COST))
        # The compiled loop takes whole 16-byte blocks only (auth's first blocks always are).
        whole = len(joined) == v1.BLOCK * len(block0s)
        scan_slice = self._compiled_slice if self._compiled is not None and whole else self._python_slice
        for start in range(0, total, step):
            stop = min(total, start + step)
            scan_slice(joined, start, stop, found)
            if stop < total:
                yield None
        yield found

    def _compiled_slice(self, joined: bytes, start: int, stop: int, found: list[list[Candidate]]) -> None:
        for block, key in self._compiled.many(joined, start, stop):
            found[block].append(self.candidates[key])

    def _python_slice(self, joined: bytes, start: int, stop: int, found: list[list[Candidate]]) -> None:
        plains = map(operator.call, self._decrypts[start:stop], repeat(joined))
        for cand, plain, expected in zip(self.candidates[start:stop], plains, self._expected[start:stop],
                                         strict=True):
            pos = plain.find(expected)
            while pos >= 0:
                if pos % v1.BLOCK == 0:
                    found[pos // v1.BLOCK].append(cand)
                pos = plain.find(expected, pos + 1)


def _last(steps: Iterator[T | None]) -> T:
    """The result of a stepped computation run to its end."""
    *_, result = steps
    assert result is not None
    return result


def match(candidates: list[Candidate], block0: bytes) -> list[Candidate]:
    """Every candidate passing the one-block test of v1.first_block_matches (XOR precomputed per key)."""
    return [cand for cand in candidates if cand.ecb.decrypt(block0).startswith(cand.expected)]


def match_many(candidates: list[Candidate], block0s: list[bytes]) -> list[list[Candidate]]:
    """`match` for many blocks at once: per candidate, one ECB call over all the blocks (a find of
    the expected prefix at 16-byte boundaries). No early stop: every match of every block counts."""
    found: list[list[Candidate]] = [[] for _ in block0s]
    if not block0s:
        return found
    joined = b"".join(block0s)
    for cand in candidates:
        plain = cand.ecb.decrypt(joined)
        expected = cand.expected
        pos = plain.find(expected)
        while pos >= 0:
            if pos % v1.BLOCK == 0:
                found[pos // v1.BLOCK].append(cand)
            pos = plain.find(expected, pos + 1)
    return found
