"""v1 identification: which registered key decrypts a connection's first block.

v1 readings carry no device id: the device is the one whose key turns block 0
into '{"Temp":"' + 7 bytes. `V1Keys` holds the v1 credentials ready for that
test (an AES context per key) and answers it for one block (`identify`), many
blocks in one pass over the keys (`identify_many`), and a batch of first
readings together with the stale key each miss matches (`identify_batch`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from services.common import v1
from services.keystore.models import Credential

# Block 0 decrypts to '{"Temp":"' + 7 bytes under the right key in both variants.
_PREFIX = v1.FIRST_BLOCK_PREFIX


@dataclass
class Candidate:
    """One v1 credential ready for identification: a cached AES-ECB object and the expected block-0 prefix."""

    device_id: str
    generation: int
    ecb: Any
    iv: bytes
    expected: bytes  # ECB-decrypted block 0 must start with this (prefix XOR iv)
    expires_at: float | None
    revoked: bool
    newest: bool
    overlapping: bool  # an older credential of the device is still valid: first use ends the overlap

    def valid(self, now: float) -> bool:
        return not self.revoked and (self.expires_at is None or self.expires_at > now)


@dataclass
class Identified:
    """A first-block identification done ahead of its request in one batched pass (identify_batch)."""

    active: list[Candidate]  # the candidate list the pass ran over (a reload replaces it)
    found: Candidate | None
    stale: Candidate | None  # when not found: a revoked or expired key that matches
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
    return Candidate(cred.device_id, cred.generation, _Ecb(key), iv, expected,
                     cred.expires_at, cred.revoked, newest, overlapping)


class V1Keys:
    """The v1 candidates: `active` (not revoked; newest credentials first) and `inactive` (revoked)."""

    def __init__(self) -> None:
        self.by_cred: dict[tuple[str, int], Candidate] = {}
        self.active: list[Candidate] = []
        self.inactive: list[Candidate] = []

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

    def identify_many(self, block0s: list[bytes], now: float) -> list[Candidate | None]:
        """What `match(self.active, b, now)` finds for each block, in one pass over the keys."""
        return match_many(self.active, block0s, now)

    def identify_batch(self, block0s: list[bytes], now: float) -> list[Identified]:
        """Identify the first blocks of several new connections together (answered later by `identify`)."""
        started = time.perf_counter()
        found = match_many(self.active, block0s, now)
        elapsed = time.perf_counter() - started
        missing = [k for k, f in enumerate(found) if f is None]
        stale: list[Candidate | None] = [None] * len(block0s)
        if missing:
            misses = [block0s[k] for k in missing]
            inactive = match_many(self.inactive, misses, None)
            again = [j for j, f in enumerate(inactive) if f is None]
            expired = match_many(self.active, [misses[j] for j in again], None)
            for j, f in zip(again, expired, strict=True):
                inactive[j] = f
            for k, f in zip(missing, inactive, strict=True):
                stale[k] = f
        return [Identified(self.active, found[k], stale[k], elapsed / len(block0s), elapsed)
                for k in range(len(block0s))]

    def identify(self, block0: bytes, now: float,
                 pre: Identified | None = None) -> tuple[Candidate | None, Candidate | None, float, float]:
        """(found, stale, seconds spent on this block, seconds of the longest pass) for one first block.

        A batched result stands if the keys were not reloaded since and its match is still in time
        (otherwise the one-at-a-time pass below gives what the unbatched path gives)."""
        if pre is not None and pre.active is self.active and (
                pre.found is None or pre.found.expires_at is None or pre.found.expires_at > now):
            return pre.found, pre.stale, pre.share, pre.seconds
        started = time.perf_counter()
        found = match(self.active, block0, now)
        elapsed = time.perf_counter() - started
        stale = None
        if found is None:
            # Not a current key: say why if it is a known but revoked or expired one (operators need it).
            stale = match(self.inactive, block0, None) or match(self.active, block0, None)
        return found, stale, elapsed, elapsed


def match(candidates: list[Candidate], block0: bytes, now: float | None) -> Candidate | None:
    """The one-block identification test of v1.first_block_matches, with the XOR precomputed per key."""
    for cand in candidates:
        if cand.ecb.decrypt(block0).startswith(cand.expected) and (
                now is None or cand.expires_at is None or cand.expires_at > now):
            return cand
    return None


def match_many(candidates: list[Candidate], block0s: list[bytes],
               now: float | None) -> list[Candidate | None]:
    """`match` for many blocks at once: per candidate, one ECB call over all the still unmatched
    blocks (a find of the expected prefix at 16-byte boundaries); stops when every block matched."""
    found: list[Candidate | None] = [None] * len(block0s)
    pending = list(range(len(block0s)))
    joined = b"".join(block0s)
    for cand in candidates:
        if not pending:
            break
        if now is not None and cand.expires_at is not None and cand.expires_at <= now:
            continue  # match would skip it whatever it decrypts
        plain = cand.ecb.decrypt(joined)
        expected = cand.expected
        pos = plain.find(expected)
        if pos < 0:
            continue
        hits = set()
        while pos >= 0:
            if pos % v1.BLOCK == 0:
                hits.add(pos // v1.BLOCK)
            pos = plain.find(expected, pos + 1)
        if hits:
            for k in hits:
                found[pending[k]] = cand
            pending = [i for k, i in enumerate(pending) if k not in hits]
            joined = b"".join(block0s[i] for i in pending)
    return found
