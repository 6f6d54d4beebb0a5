"""Batched identification: many first readings identified in one pass over the v1 keys."""
from __future__ import annotations

import json
import os
import random
import time

from services.auth.identify import candidate, match, match_many
from services.auth.service import AuthService
from services.common import v1
from services.keystore.credentials import make_secret
from services.keystore.models import Credential
from tests.auth.test_service import GOOD, add
from tests.auth.wire import AuthClient, encrypt

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# Registered keys that no reading uses: identification of a first reading tries them all in the worst case.
DECOYS = 2000


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(_ALNUM) for _ in range(16))


def _block0(key: str, iv: str, variant: str = "chained") -> bytes:
    return bytes.fromhex(encrypt(key, iv, GOOD, variant).split(b"+")[0].decode())


def test_match_many_equals_match_one_at_a_time():
    rng = random.Random(1)
    now = 1000.0
    secrets = [(_random_text(rng), _random_text(rng)) for _ in range(60)]
    cands = []
    for n, (key, iv) in enumerate(secrets):
        # Current, in a grace period, past it, or revoked: matching ignores the state (the caller judges).
        expires = [None, now + 50, now - 50][n % 3]
        cred = Credential(f"dev-{n}", "v1", 1, {"key": key, "iv": iv}, expires, n % 7 == 0)
        cands.append(candidate(cred, True, False))
    # The same key and IV head twice (a clash from before the store's check): both are found.
    key, iv = secrets[2]
    cands.append(candidate(Credential("dup", "v1", 2, {"key": key, "iv": iv[:9] + "~~~~~~~"}, None, False),
                           True, False))
    blocks = [_block0(k, i, rng.choice(["chained", "per_block"])) for k, i in secrets]
    blocks += [os.urandom(v1.BLOCK) for _ in range(20)]  # no key at all
    blocks += [_block0(_random_text(rng), _random_text(rng)) for _ in range(5)]  # well-formed, unknown key
    blocks += blocks[:7]  # the same first block twice in one batch
    rng.shuffle(blocks)
    expected = [match(cands, b) for b in blocks]
    assert match_many(cands, blocks) == expected
    assert {len(e) for e in expected} == {0, 1, 2}
    doubles = [e for e in expected if len(e) == 2]
    assert doubles and all([c.device_id for c in e] == ["dev-2", "dup"] for e in doubles)
    assert match_many(cands, []) == []
    assert match_many([], blocks[:3]) == [[], [], []]
    assert match_many(cands, [blocks[0]]) == [match(cands, blocks[0])]


def test_identify_many_on_the_service_keys(store):
    rng = random.Random(2)
    pairs = [(_random_text(rng), _random_text(rng)) for _ in range(30)]
    for n, (key, iv) in enumerate(pairs):
        add(store, f"dev-{n}", key, iv)
    new = make_secret("v1")
    store.rotate("dev-0", new, grace=0)  # dev-0's old key is expired now, and still found
    store.revoke("dev-1")
    service = AuthService(store)
    service.refresh(force=True)
    blocks = [_block0(k, i) for k, i in pairs] + [_block0(new["key"], new["iv"]), os.urandom(16)]
    found = service.identify_many(blocks)
    assert found == [match(service._keys.every, b) for b in blocks]
    assert found[-1] == []
    assert [(c.device_id, c.generation) for f in found[:-1] for c in f] == (
        [(f"dev-{n}", 1) for n in range(30)] + [("dev-0", 2)])


def _req(conn, wire, **extra):
    blocks = wire.decode().replace("+", "") if isinstance(wire, bytes) else wire
    return {"op": "v1", "conn": conn, "src": "127.0.0.1:5000", "blocks": blocks, "final": False, **extra}


def test_identify_batch_answers_as_one_at_a_time(store):
    """A batch whose own answers change the keys (a rotation confirmed mid-batch) answers as before."""
    secrets = {name: make_secret("v1") for name in ("a", "b", "c", "r")}
    for name, s in secrets.items():
        add(store, name, s["key"], s["iv"])
    wire = {name: encrypt(s["key"], s["iv"], GOOD) for name, s in secrets.items()}
    b_new = make_secret("v1")
    store.rotate("b", b_new, grace=3600)
    c_new = make_secret("v1")
    store.rotate("c", c_new, grace=0)
    store.revoke("r")
    service = AuthService(store)
    service.refresh(force=True)
    batch = [
        _req(1, wire["a"]),
        _req(2, wire["b"]),  # old key of b, in its overlap: ok
        _req(3, encrypt(b_new["key"], b_new["iv"], GOOD)),  # new key of b: ok, ends the overlap
        _req(4, wire["b"]),  # old key of b after the confirmation: key_expired
        _req(5, wire["r"]),
        _req(6, encrypt("u" * 16, "v" * 16, GOOD)),
        _req(7, wire["c"]),
        _req(1, wire["a"]),  # the session of conn 1, made earlier in the batch
        {"op": "close", "conn": 8},
        _req(8, wire["a"]),  # after a close of its conn in the batch: not pre-identified
        _req(9, "zz" * 16),
        _req(10, encrypt(c_new["key"], c_new["iv"], GOOD)),
    ]
    batch = [{"id": n, **r} for n, r in enumerate(batch)]
    pre = service.identify_batch(batch, "x")
    assert [p is not None for p in pre] == [True] * 7 + [False] * 4 + [True]
    answers = [service.handle(r, "x", p) for r, p in zip(batch, pre, strict=True)]
    got = [(a["id"], a["status"], a.get("reason"), a.get("device")) for a in answers]
    assert got == [
        (0, "ok", None, "a"), (1, "ok", None, "b"), (2, "ok", None, "b"), (3, "rejected", "key_expired", "b"),
        (4, "rejected", "revoked", "r"), (5, "rejected", "unknown_key", None),
        (6, "rejected", "key_expired", "c"), (7, "ok", None, "a"), (8, "closed", None, None),
        (9, "ok", None, "a"), (10, "rejected", "bad_request", None), (11, "ok", None, "c"),
    ]
    assert answers[0]["values"] == json.loads(GOOD)
    assert service.metrics.identified == 9  # every first reading but the malformed one
    assert service.metrics.rejected == {"key_expired": 2, "revoked": 1, "unknown_key": 1, "bad_request": 1}
    assert service.metrics.sessions == 5
    assert {k[1] for k in service._sessions} == {1, 2, 3, 8, 10}


def test_pipelined_first_readings_of_200_devices(store, auth_proc, state):
    rng = random.Random(3)
    for n in range(DECOYS):
        add(store, f"decoy-{n}", _random_text(rng), _random_text(rng))
    pairs = [(_random_text(rng), _random_text(rng)) for _ in range(200)]
    for n, (key, iv) in enumerate(pairs):
        add(store, f"dev-{n}", key, iv)
    wires = [encrypt(k, i, GOOD, "chained" if n % 2 else "per_block").decode().replace("+", "")
             for n, (k, i) in enumerate(pairs)]
    unknown = encrypt("u" * 16, "v" * 16, GOOD).decode().replace("+", "")
    # The unknown key in the middle of the batch.
    order = [(f"dev-{n}", w) for n, w in enumerate(wires)]
    order.insert(100, (None, unknown))

    def check(answers, ids):
        assert [a["id"] for a in answers] == ids
        for (device, _), answer in zip(order, answers, strict=True):
            if device is None:
                assert (answer["status"], answer["reason"]) == ("rejected", "unknown_key")
            else:
                assert (answer["status"], answer["device"]) == ("ok", device), answer
                assert answer["values"] == json.loads(GOOD)

    client = AuthClient(state.auth_socket)
    try:
        client.reading(0, wires[0])  # keys loaded, connection warm
        started = time.perf_counter()
        ids = [client.send({"op": "v1", "conn": 1000 + n, "src": "127.0.0.1:5000", "blocks": w,
                            "final": False}) for n, (_, w) in enumerate(order)]
        answers = [client.recv() for _ in ids]
        batched = time.perf_counter() - started
        check(answers, ids)

        started = time.perf_counter()
        answers, ids = [], []
        for n, (_, w) in enumerate(order):
            answers.append(client.reading(2000 + n, w))
            ids.append(answers[-1]["id"])
        serial = time.perf_counter() - started
        check(answers, ids)
    finally:
        client.close()
    print(f"\n201 first readings, {DECOYS + 200} keys: pipelined {batched * 1000:.1f} ms, "
          f"one at a time {serial * 1000:.1f} ms")
