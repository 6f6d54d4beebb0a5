"""Issue 14 item 4: a v1 block that cannot be part of a device's text is refused when it arrives.

Auth is asked about every run of complete blocks (the proxy asks whenever its buffer ends at a
block, or at a '+' after one: `open`). Every block must decrypt to printable ASCII under the
connection's credential and variant (both variants while it is not known yet).
"""
from __future__ import annotations

import json
import random

import pytest

from services.auth.service import AuthService
from services.common import v1
from tests.auth.test_v1_contest import add, ask, text, values
from tests.auth.wire import encrypt


def served(store) -> AuthService:
    """The auth service on the store as it is now."""
    service = AuthService(store)
    service.refresh(force=True)
    return service


def one_device(store, seed: int) -> tuple[random.Random, str, str, AuthService]:
    """A seeded rng, device "dev" with a key and iv drawn from it, and the service on it."""
    rng = random.Random(seed)
    key, iv = text(rng), text(rng)
    add(store, "dev", key, iv)
    return rng, key, iv, served(store)


@pytest.fixture
def devices(store, vectors):
    """Every vector's credentials registered, and the service on them."""
    pairs = sorted({(v["key"], v["iv"]) for v in vectors})
    for n, (key, iv) in enumerate(pairs):
        add(store, f"vec-{n}", key, iv)
    return served(store), {pair: f"vec-{n}" for n, pair in enumerate(pairs)}


def runs(wire: str, rng: random.Random) -> list[tuple[bytes, bool]]:
    """What the proxy may ask about as a reading arrives in random pieces: the blocks complete so
    far, `open` when a '+' follows them; the last run is the whole reading."""
    blocks = wire.encode().split(b"+")
    out = []
    for k in range(1, len(blocks)):
        if rng.random() < 0.6:
            out.append((b"+".join(blocks[:k]), rng.random() < 0.5))
    return out + [(wire.encode(), False)]


def test_no_valid_stream_is_refused(devices, vectors):
    """Every vector (both variants), split at random, several readings per connection."""
    service, names = devices
    rng = random.Random(1)
    conn = 0
    for _ in range(4):
        by_pair: dict[tuple[str, str], list[dict]] = {}
        for vec in rng.sample(vectors, len(vectors)):
            by_pair.setdefault((vec["key"], vec["iv"], vec["variant"]), []).append(vec)
        for (key, iv, _), stream in by_pair.items():
            conn += 1
            for vec in stream:
                for blocks, open_ in runs(vec["wire"], rng)[:-1]:
                    extra = {"open": True} if open_ else {}
                    answer = ask(service, conn, blocks, **extra)
                    assert answer["status"] == "more", (answer, vec["plaintext"])
                answer = ask(service, conn, vec["wire"].encode(), final=rng.random() < 0.5)
                assert (answer["status"], answer["device"]) == ("ok", names[(key, iv)]), answer
                assert answer["values"] == json.loads(vec["plaintext"])
    assert service.metrics.rejected == {}


def garbage(rng: random.Random) -> bytes:
    return rng.randbytes(v1.BLOCK)


def hexed(blocks: list[bytes]) -> bytes:
    return b"+".join(b.hex().encode() for b in blocks)


@pytest.mark.parametrize("variant", v1.VARIANTS)
def test_a_bad_block_is_refused_where_it_arrives(store, variant):
    """Garbage at every position of a reading (block 1 before the variant is known, the middle,
    the last block), as the first reading of a connection and after good ones."""
    rng, key, iv, service = one_device(store, variant)
    conn = 0
    for after_good in (0, 1, 2):
        for position in range(1, 9):
            conn += 1
            for _ in range(after_good):
                good = encrypt(key, iv, v1.format_reading(values(rng)), variant)
                assert ask(service, conn, good)["status"] == "ok"
            blocks = [bytes.fromhex(b.decode()) for b in
                      encrypt(key, iv, v1.format_reading(values(rng)), variant).split(b"+")]
            position = min(position, len(blocks) - 1)
            blocks[position] = garbage(rng)
            for k in range(1, position + 1):
                assert ask(service, conn, hexed(blocks[:k]), open=True)["status"] == "more"
            open_ = position < len(blocks) - 1 and rng.random() < 0.5
            answer = ask(service, conn, hexed(blocks[:position + 1]), **({"open": True} if open_ else {}))
            assert (answer["status"], answer["reason"]) == ("rejected", "not_printable")
            assert answer["device"] == "dev"
            assert f"block {position} " in answer["detail"]
    assert service.metrics.accepted == (0 + 1 + 2) * 8
    assert service.metrics.rejected == {"not_printable": 3 * 8}


def test_random_blocks_after_a_good_first_block_and_after_a_good_reading(store):
    rng = random.Random(3)
    key, iv = text(rng), text(rng)
    add(store, "dev", key, iv)
    other_key, other_iv = text(rng), text(rng)
    add(store, "other", other_key, other_iv)
    service = served(store)
    for conn in range(20):
        first = encrypt(key, iv, v1.format_reading(values(rng))).split(b"+")[0]
        tail = hexed([garbage(rng) for _ in range(rng.randint(1, 7))])
        answer = ask(service, conn, first + b"+" + tail, final=bool(conn % 2))
        assert (answer["reason"], answer["device"]) == ("not_printable", "dev")
        assert "block 1 " in answer["detail"]
    # A good reading, then random blocks, or another device's reading: refused at its first block.
    for conn, after in enumerate([hexed([garbage(rng) for _ in range(8)]),
                                  encrypt(other_key, other_iv, v1.format_reading(values(rng)))], 100):
        assert ask(service, conn, encrypt(key, iv, v1.format_reading(values(rng))))["status"] == "ok"
        answer = ask(service, conn, after.split(b"+")[0], open=True)
        assert (answer["reason"], answer["detail"][:8]) == ("not_printable", "block 0 ")


def test_an_open_run_is_never_a_complete_reading(store):
    """A '+' after the padding block: the reading goes on, so nothing is published yet."""
    rng, key, iv, service = one_device(store, 4)
    wire = encrypt(key, iv, v1.format_reading(values(rng)))
    assert ask(service, 1, wire, open=True)["status"] == "more"
    assert service.metrics.accepted == 0


def test_printable_but_wrong_text_keeps_its_reason(store):
    """Text that is printable keeps the decode reasons (not_json, bad_padding, ...)."""
    rng, key, iv, service = one_device(store, 5)
    cases = [(b'{"Temp":"36.600", this is not json at all', "not_json"),
             (v1.format_reading(values(rng))[:-1] + b"~", "not_json"),
             (b'{"Temp":"36.600","TempMcu":"23.700"}', "missing_field")]
    for conn, (plaintext, reason) in enumerate(cases):
        assert ask(service, conn, encrypt(key, iv, plaintext))["reason"] == reason
    # Text without its padding block, sent as a complete reading: bad_padding.
    first = encrypt(key, iv, b'{"Temp":"36.600","TempMcu"' + b" " * 6).split(b"+")
    assert ask(service, 10, b"+".join(first[:2]), final=True)["reason"] == "bad_padding"
