"""The audit log's witness on the broker: when it moves, and what a truncation or rewrite looks like."""
from __future__ import annotations

from services.keyadmin.audit_witness import Witness, decode, encode, mismatch, next_witness
from services.keystore.audit import AuditEntry


def entry(seq: int, digest: str) -> AuditEntry:
    return AuditEntry(seq, 0.0, "admin", "added", f"d{seq}", {}, "prev", digest)


def test_payload_round_trips_and_junk_is_ignored():
    assert decode(encode(Witness(7, "ab" * 32))) == Witness(7, "ab" * 32)
    assert decode(b"not json") is None and decode(b'{"seq": "x"}') is None


def test_the_witness_moves_forward_over_an_intact_past():
    assert next_witness(None, None, None) == (None, None)  # empty log, nothing witnessed yet
    assert next_witness(None, (3, "h3"), None) == (Witness(3, "h3"), None)
    assert next_witness(Witness(3, "h3"), (5, "h5"), entry(3, "h3")) == (Witness(5, "h5"), None)
    assert next_witness(Witness(5, "h5"), (5, "h5"), entry(5, "h5")) == (None, None)


def test_a_cut_or_rewritten_log_is_never_witnessed():
    publish, problem = next_witness(Witness(5, "h5"), (3, "h3"), None)
    assert publish is None and problem.startswith("TRUNCATED: the broker witnessed entry 5")
    assert "the log ends at entry 3" in problem
    # Cut, then new entries appended past the witness: entry 5 is back, with another hash.
    publish, problem = next_witness(Witness(5, "h5"), (6, "x6"), entry(5, "x5"))
    assert publish is None and problem.startswith("REWRITTEN: entry 5 has hash x5")
    publish, problem = next_witness(Witness(2, "h2"), None, None)
    assert publish is None and "ends at entry 0" in problem


def test_mismatch_is_none_for_the_witnessed_entry():
    assert mismatch(Witness(4, "h4"), entry(4, "h4"), 9) is None
