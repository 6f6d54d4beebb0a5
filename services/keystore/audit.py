"""The audit log's keyed hash chain: each entry's hash is an HMAC over its fields and the previous hash.

The key is derived from the master key (sealing.py `Sealer.audit_key`), so
someone who can write the database but does not hold the master key cannot
recompute the chain after an edit: a chain recomputed with plain SHA-256, or
with another key, fails verification.

Logs written before the chain was keyed hold plain SHA-256 entries. Opening
such a store appends one keyed checkpoint entry (action CHECKPOINT) whose
`prev` is the old head: the old entries stay as they were (unkeyed, so they
are only as trustworthy as the log was then), and everything from the
checkpoint on is keyed. A chain without a checkpoint must be keyed from entry 1.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
# The keyed entry that anchors a log written before the chain was keyed (sql.py migration).
CHECKPOINT = "audit_keyed"


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    ts: float
    actor: str
    action: str
    device: str | None
    detail: dict[str, Any]
    prev: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts, "actor": self.actor, "action": self.action,
                "device": self.device, "detail": self.detail, "prev": self.prev, "hash": self.hash}


@dataclass(frozen=True)
class Broken:
    """The first entry whose link does not verify, and why (words for operators)."""

    entry: AuditEntry
    reason: str


def audit_hash(key: bytes | None, prev: str, seq: int, ts: float, actor: str, action: str,
               device: str | None, detail: dict[str, Any]) -> str:
    """HMAC-SHA256 under `key` over the entry's fields and the previous hash; plain SHA-256 when
    `key` is None (only to check entries written before the chain was keyed)."""
    body = json.dumps([seq, repr(ts), actor, action, device, detail], sort_keys=True, separators=(",", ":"))
    data = (prev + "\n" + body).encode()
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _hash_of(entry: AuditEntry, key: bytes | None) -> str:
    return audit_hash(key, entry.prev, entry.seq, entry.ts, entry.actor, entry.action, entry.device,
                      entry.detail)


def verify_chain(entries: Iterable[AuditEntry], key: bytes) -> Broken | None:
    """The first entry whose link is broken (edited, removed before it, reordered, recomputed
    without the key), or None. Entries before the first keyed checkpoint may be plain SHA-256
    (written before the chain was keyed) or keyed."""
    items = list(entries)
    checkpoint = next((i for i, e in enumerate(items)
                       if e.action == CHECKPOINT and hmac.compare_digest(_hash_of(e, key), e.hash)), None)
    prev = GENESIS
    expected_seq = None
    for index, entry in enumerate(items):
        if expected_seq is not None and entry.seq != expected_seq:
            return Broken(entry, "its sequence number is out of order (an entry was removed)")
        if entry.prev != prev:
            return Broken(entry, "its link to the previous entry is broken "
                                 "(an entry before it was removed or changed)")
        keyed = checkpoint is None or index >= checkpoint
        if not hmac.compare_digest(_hash_of(entry, key), entry.hash) and (
                keyed or not hmac.compare_digest(_hash_of(entry, None), entry.hash)):
            return Broken(entry, "its content does not match its keyed hash (the entry was edited, "
                                 "or the chain was recomputed without the key)" if keyed else
                                 "its content does not match its hash (the entry was edited)")
        prev = entry.hash
        expected_seq = entry.seq + 1
    return None


def loads_detail(text: str) -> dict[str, Any]:
    """A stored entry's detail column; an unparsable one is shown, not dropped (verification then fails)."""
    try:
        value = json.loads(text)
    except ValueError:
        return {"unparsable": text}
    return value if isinstance(value, dict) else {"value": value}
