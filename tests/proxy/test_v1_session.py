"""The v1 session fed raw bytes, with auth's answers computed from the vectors' keys (no I/O)."""
import binascii
import json
import random
from pathlib import Path

import pytest
from Crypto.Cipher import AES

from services.common import v1
from services.proxy.authclient import PIPELINE
from services.proxy.errors import Reject
from services.proxy.v1 import V1Session, check_values

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "v1.json").read_text())["readings"]


def groups():
    out: dict[tuple, list] = {}
    for vec in VECTORS:
        out.setdefault((vec["key"], vec["iv"], vec["variant"]), []).append(vec)
    return list(out.items())


def answer(key: str, iv: str, variant: str, found: v1.Scan) -> tuple[str, bytes | None]:
    """What auth answers: "more" unless the last block is padding, else the plaintext."""
    plain = v1.decrypt(AES.new(key.encode(), AES.MODE_ECB), iv.encode(), found.blocks, variant)
    if not found.final and not v1.ends_with_padding(plain):
        return "more", None
    return "ok", v1.strip_padding(plain)


def drive(session: V1Session, key: str, iv: str, variant: str, chunks: list[bytes],
          limit: int = PIPELINE) -> tuple[list, int]:
    """Feed chunks as the handler does (up to `limit` readings asked together); returns the
    readings in order and how many requests went to auth."""
    out, asked, now = [], 0, 0.0
    for chunk in chunks:
        now += 0.001
        session.feed(chunk, now)
        while runs := session.next_requests(limit):
            assert len(runs) <= limit and all(found.final for found in runs[1:])
            asked += len(runs)
            for found in runs:
                status, text = answer(key, iv, variant, found)
                if status == "more":
                    session.more()
                    break
                out.append(text)
                session.accepted(found, 0.0)
    return out, asked


@pytest.mark.parametrize("group", groups(), ids=lambda g: f"{g[0][0]}-{g[0][2]}")
@pytest.mark.parametrize("split", ["one_write", "byte_at_a_time", "random"])
@pytest.mark.parametrize("limit", [1, 3, PIPELINE])
def test_stream_gives_every_reading_whatever_the_splits(group, split, limit):
    (key, iv, variant), vecs = group
    stream = b"".join(v["wire"].encode() for v in vecs)
    if split == "one_write":
        chunks = [stream]
    elif split == "byte_at_a_time":
        chunks = [stream[i:i + 1] for i in range(len(stream))]
    else:
        rng, chunks, pos = random.Random(7), [], 0
        while pos < len(stream):
            size = rng.randint(1, 300)
            chunks.append(stream[pos:pos + size])
            pos += size
    session = V1Session(64, 60, 10, 0.0)
    readings, _ = drive(session, key, iv, variant, chunks, limit)
    assert readings == [v["plaintext"].encode() for v in vecs]
    assert not session.buffer


def test_complete_readings_are_asked_together_and_a_fault_behind_them_waits_its_turn():
    """Readings in the buffer are pipelined (each ended by the next one's first byte); the last,
    not yet ended, and bad bytes behind good readings are for the next round."""
    (key, iv, variant), vecs = groups()[0]
    wires = [v["wire"].encode() for v in vecs[:3]]
    session = V1Session(64, 60, 10, 0.0)
    session.feed(b"".join(wires) + b"0123456789abcdefXYZ", 0.0)
    runs = session.next_requests(PIPELINE)
    assert [b"+".join(binascii.hexlify(b) for b in r.blocks) for r in runs] == wires
    assert all(r.final for r in runs)
    assert len(session.next_requests(2)) == 2  # the limit holds
    for found in runs:
        session.accepted(found, 0.0)
    with pytest.raises(Reject) as info:
        session.next_requests(PIPELINE)
    assert info.value.reason == "not_hex"

    session = V1Session(64, 60, 10, 0.0)
    session.feed(b"".join(wires[:2]) + wires[2][:40], 0.0)
    runs = session.next_requests(PIPELINE)
    assert len(runs) == 2 and all(r.final for r in runs)  # the third is not complete


def test_a_reading_completes_without_the_next_one_starting():
    vec = VECTORS[0]
    session = V1Session(64, 60, 10, 0.0)
    readings, _ = drive(session, vec["key"], vec["iv"], vec["variant"], [vec["wire"].encode()])
    assert readings == [vec["plaintext"].encode()]


def test_no_new_request_until_bytes_arrive_after_more():
    vec = VECTORS[0]
    first_block = vec["wire"].encode()[:32]
    session = V1Session(64, 60, 10, 0.0)
    session.feed(first_block, 0.0)
    found = session.next_request()
    assert found is not None and not found.final and len(found.blocks) == 1
    session.more()
    assert session.next_request() is None
    session.feed(b"+", 0.1)
    assert session.next_request() is None  # the next block is not complete


@pytest.mark.parametrize("data, reason", [
    (b"0123456789abcdefXYZ", "not_hex"),
    (b"0123456789abcdef0123+", "bad_block_length"),
    (b"00" * 16 + b"++", "bad_separator"),
    (b"+".join([b"00" * 16] * 65) + b"+", "too_long"),
])
def test_malformed_input_names_its_reason(data, reason):
    session = V1Session(64, 60, 10, 0.0)
    session.feed(data, 0.0)
    with pytest.raises(Reject) as info:
        session.next_request()
    assert info.value.reason == reason


def test_idle_deadline_then_reading_deadline():
    session = V1Session(64, idle_timeout=5.0, reading_timeout=2.0, now=100.0)
    assert session.deadline() == (105.0, "idle_timeout")
    session.feed(b"0", 101.0)  # a reading starts: it must end by 103 even if bytes keep coming
    session.feed(b"1", 102.5)
    assert session.deadline() == (103.0, "reading_timeout")


def test_leftover_bytes_start_the_next_reading_clock():
    vec = VECTORS[0]
    wire = vec["wire"].encode()
    session = V1Session(64, idle_timeout=60.0, reading_timeout=2.0, now=0.0)
    session.feed(wire + wire[:10], 50.0)
    found = session.next_request()
    assert found is not None and found.final
    session.accepted(found, 50.5)
    assert session.deadline() == (52.5, "reading_timeout")
    session.feed(wire[10:], 51.0)
    found = session.next_request()
    session.accepted(found, 51.2)
    assert session.deadline() == (111.2, "idle_timeout")


def test_time_spent_by_the_gateway_is_not_charged_to_the_device():
    """Auth and the broker took 5 s over one reading; the buffered next one still gets its full time."""
    wire = VECTORS[0]["wire"].encode()
    session = V1Session(64, idle_timeout=60.0, reading_timeout=2.0, now=0.0)
    session.feed(wire + wire[:10], 10.0)
    found = session.next_request()
    session.accepted(found, 15.0)
    assert session.deadline() == (17.0, "reading_timeout")


def test_auth_answer_must_hold_the_seven_string_fields():
    good = {f: "1.000" for f in v1.FIELDS}
    assert check_values(good) == good
    for bad in (None, {"Temp": "1"}, {**good, "Temp": 1.0}, {**good, "extra": "x"}):
        with pytest.raises(Reject) as info:
            check_values(bad)
        assert info.value.reason == "auth_protocol"
