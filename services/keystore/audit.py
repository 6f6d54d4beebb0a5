"""The audit log's hash chain: each entry's hash covers its fields and the previous hash."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64


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


def audit_hash(prev: str, seq: int, ts: float, actor: str, action: str, device: str | None,
               detail: dict[str, Any]) -> str:
    """Each entry's hash covers its fields and the previous hash: editing any entry breaks the chain."""
    body = json.dumps([seq, repr(ts), actor, action, device, detail], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((prev + "\n" + body).encode()).hexdigest()


def verify_chain(entries: Iterable[AuditEntry]) -> AuditEntry | None:
    """Return the first entry whose link is broken (edited, removed before it, reordered), or None."""
    prev = GENESIS
    expected_seq = None
    for entry in entries:
        if expected_seq is not None and entry.seq != expected_seq:
            return entry
        if entry.prev != prev or audit_hash(prev, entry.seq, entry.ts, entry.actor, entry.action,
                                            entry.device, entry.detail) != entry.hash:
            return entry
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
