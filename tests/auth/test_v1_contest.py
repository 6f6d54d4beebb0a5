"""Issue 14 item 1: v1 identification never picks among several credentials.

The store refuses credentials block 0 cannot tell apart (tests/keystore/test_clashes.py), but a
store may hold some from before that check. Here they are written with the check bypassed, as
such a store holds them, and auth must then decide by the whole first reading: exactly one
credential under which it decodes validly, or `ambiguous_key` and nothing served.
"""
from __future__ import annotations

import json
import logging
import random
import string
import sys

import pytest
from Crypto.Cipher import AES

from services.auth.service import AuthService
from services.common import v1
from services.common.readings import ReadingError, validate
from services.keystore.credentials import make_secret
from services.keystore.models import NewDevice
from services.stack.metrics import parse_prometheus
from tests.auth.wire import AuthClient, encrypt
from tests.support.proc import wait_until

ALPHABET = string.ascii_letters + string.digits


def text(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(16))


def values(rng: random.Random) -> dict[str, float]:
    return {"Temp": rng.uniform(34, 41), "TempMcu": rng.uniform(15, 40), "PulseSig": rng.uniform(0, 3.3),
            "Acel_x": rng.uniform(-2, 2), "Acel_y": rng.uniform(-2, 2), "Acel_z": rng.uniform(-2, 2),
            "TempMpu": rng.uniform(15, 40)}


def with_tail(iv: str, changes: dict[int, int]) -> str:
    """The IV with the bytes at positions 9-15 XORed by `changes` (its first 9 bytes kept)."""
    raw = bytearray(iv.encode())
    for pos, mask in changes.items():
        assert pos >= 9
        raw[pos] ^= mask
    return raw.decode()


def add(store, device_id: str, key: str, iv: str) -> None:
    store.add(NewDevice(device_id, "v1", make_secret("v1", {"key": key, "iv": iv})))


@pytest.fixture
def unchecked(store, monkeypatch):
    """The store with its clash check bypassed: what a store from before the check may hold."""
    monkeypatch.setattr(store, "_check_clash", lambda *args: None)
    return store


def service_on(store) -> AuthService:
    service = AuthService(store)
    service.refresh(force=True)
    return service


def ask(service: AuthService, conn: int, wire: bytes, final: bool = False, **extra) -> dict:
    request = {"id": conn, "op": "v1", "conn": conn, "src": "127.0.0.1:5000",
               "blocks": wire.decode().replace("+", ""), "final": final, **extra}
    return service.handle(request, "proxy")


def valid_under(key: str, iv: str, wire: bytes) -> dict[str, str] | None:
    """The reference: the reading's values under one credential (either variant), or None."""
    blocks = tuple(bytes.fromhex(b) for b in wire.decode().split("+"))
    for variant in v1.VARIANTS:
        try:
            found = v1.decode_reading(AES.new(key.encode(), AES.MODE_ECB), iv.encode(), blocks, variant)
            validate(found)
            return found
        except (v1.V1Error, ReadingError):
            continue
    return None


def test_identical_credentials_are_never_picked(unchecked, caplog):
    rng = random.Random(1)
    key, iv = text(rng), text(rng)
    add(unchecked, "twin-a", key, iv)
    add(unchecked, "twin-b", key, iv)
    service = service_on(unchecked)
    caplog.set_level(logging.INFO, "medsec.auth")
    for conn, variant in enumerate(v1.VARIANTS * 5):
        plaintext = v1.format_reading(values(rng))
        answer = ask(service, conn, encrypt(key, iv, plaintext, variant))
        assert (answer["status"], answer["reason"], answer["device"]) == ("rejected", "ambiguous_key", None)
        assert "twin-a" in answer["detail"] and "twin-b" in answer["detail"]
    assert service.metrics.rejected == {"ambiguous_key": 10}
    assert service.metrics.accepted == 0
    assert not service._sessions
    lines = [r.getMessage() for r in caplog.records]
    assert sum("reason=ambiguous_key" in ln for ln in lines) == 10
    assert key not in "\n".join(lines) and iv not in "\n".join(lines)


@pytest.mark.parametrize("variant", v1.VARIANTS)
def test_same_key_and_iv_head_the_whole_reading_decides(unchecked, variant):
    """Random IV tails and random readings of both devices: served exactly when the reading decodes
    under one credential only, as that device with its own values; refused when under both."""
    rng = random.Random(variant)
    outcomes = set()
    for pair in range(12):
        key, iv_a = text(rng), text(rng)
        # Tail changes that keep digits digits (low bit) as well as ones that break the text.
        # (IV characters are alphanumeric: XOR 1-3 keeps them printable; 0x20 flips a letter's case.)
        positions = rng.sample(range(9, 16), rng.randint(1, 3))
        mask = {pos: rng.choice([1, 1, 2, 3]) if iv_a[pos].isdigit() else rng.choice([1, 2, 3, 0x20])
                for pos in positions}
        iv_b = with_tail(iv_a, mask) if pair else iv_a  # the first pair: identical credentials
        a, b = f"a{pair}", f"b{pair}"
        add(unchecked, a, key, iv_a)
        add(unchecked, b, key, iv_b)
        service = service_on(unchecked)
        for conn in range(16):
            owner, iv = (a, iv_a) if conn % 2 else (b, iv_b)
            plaintext = v1.format_reading(values(rng))
            wire = encrypt(key, iv, plaintext, variant)
            under_a, under_b = valid_under(key, iv_a, wire), valid_under(key, iv_b, wire)
            answer = ask(service, conn, wire)
            if under_a is not None and under_b is not None:
                outcomes.add("ambiguous")
                assert (answer["status"], answer["reason"]) == ("rejected", "ambiguous_key"), answer
            else:
                outcomes.add("served")
                assert (answer["status"], answer["device"]) == ("ok", owner), answer
                assert answer["values"] == json.loads(plaintext)
    assert outcomes == {"ambiguous", "served"}


def test_a_digit_changed_by_the_iv_tail_is_ambiguous_and_a_broken_quote_is_not(unchecked):
    """Chained readings: only block 0's bytes 9-15 differ between the two credentials."""
    key, iv = "K" * 16, "I" * 16
    add(unchecked, "real", key, iv)
    add(unchecked, "digit", key, with_tail(iv, {10: 1}))  # '{"Temp":"36.6' -> '{"Temp":"37.6'
    service = service_on(unchecked)
    wire = encrypt(key, iv, v1.format_reading(dict.fromkeys(v1.FIELDS, 0.0) | {"Temp": 36.6}))
    assert ask(service, 1, wire)["reason"] == "ambiguous_key"
    unchecked.revoke("digit")
    add(unchecked, "quote", key, with_tail(iv, {15: 1}))  # the closing '"' of Temp's value
    service = service_on(unchecked)
    # Revoked "digit" still takes part: its credential decodes the reading too.
    assert ask(service, 2, wire)["reason"] == "ambiguous_key"


def test_clash_with_a_revoked_device(unchecked):
    rng = random.Random(3)
    key, iv = text(rng), text(rng)
    add(unchecked, "stolen", key, iv)
    unchecked.revoke("stolen")
    add(unchecked, "new", key, iv)  # identical to the revoked one
    service = service_on(unchecked)
    answer = ask(service, 1, encrypt(key, iv, v1.format_reading(values(rng))))
    assert (answer["reason"], answer["device"]) == ("ambiguous_key", None)
    # A tail under which each one's readings break under the other's credential (the closing
    # quote of Temp): the revoked device's readings are refused as revoked, the other's served.
    key2, iv2 = text(rng), text(rng)
    add(unchecked, "lost", key2, iv2)
    unchecked.revoke("lost")
    add(unchecked, "other", key2, with_tail(iv2, {15: 1}))
    service = service_on(unchecked)
    for conn, variant in enumerate(v1.VARIANTS, 2):
        lost = ask(service, conn, encrypt(key2, iv2, v1.format_reading(values(rng)), variant))
        assert (lost["status"], lost["reason"], lost["device"]) == ("rejected", "revoked", "lost")
        mine = ask(service, conn + 10, encrypt(key2, with_tail(iv2, {15: 1}), v1.format_reading(values(rng)),
                                               variant))
        assert (mine["status"], mine["device"]) == ("ok", "other")


def test_clash_with_a_credential_in_its_grace_period_or_expired(unchecked):
    rng = random.Random(4)
    t = [1000.0]
    unchecked._clock = lambda: t[0]
    key, iv = text(rng), text(rng)
    add(unchecked, "rotating", key, iv)
    unchecked.rotate("rotating", make_secret("v1"), grace=3600)
    add(unchecked, "copy", key, iv)
    service = AuthService(unchecked, clock=lambda: t[0])
    service.refresh(force=True)
    wire = encrypt(key, iv, v1.format_reading(values(rng)))
    assert ask(service, 1, wire)["reason"] == "ambiguous_key"
    t[0] += 7200  # rotating's old credential expired: it still takes part
    assert ask(service, 2, wire)["reason"] == "ambiguous_key"


def test_a_contest_spans_requests_then_the_connection_keeps_its_device(unchecked):
    rng = random.Random(5)
    key, iv_a = text(rng), text(rng)
    iv_b = with_tail(iv_a, {15: 1})
    add(unchecked, "a", key, iv_a)
    add(unchecked, "b", key, iv_b)
    service = service_on(unchecked)
    plaintext = v1.format_reading(values(rng))
    blocks = encrypt(key, iv_b, plaintext, "per_block").split(b"+")
    for k in range(1, len(blocks)):
        assert ask(service, 1, b"+".join(blocks[:k]))["status"] == "more"
    answer = ask(service, 1, b"+".join(blocks))
    assert (answer["status"], answer["device"], answer["variant"]) == ("ok", "b", "per_block")
    # Decided: the next readings are b's, with no contest (a's credential is not tried again).
    again = ask(service, 1, encrypt(key, iv_b, plaintext, "per_block"))
    assert (again["status"], again["device"]) == ("ok", "b")
    wrong = ask(service, 1, encrypt(key, iv_a, plaintext, "per_block"), final=True)
    assert wrong["status"] == "rejected" and wrong["device"] == "b"


def test_batched_identification_follows_the_same_rule(unchecked):
    rng = random.Random(6)
    key, iv = text(rng), text(rng)
    add(unchecked, "a", key, iv)
    add(unchecked, "b", key, iv)
    solo = text(rng), text(rng)
    add(unchecked, "solo", *solo)
    split_key, split_iv = text(rng), text(rng)
    add(unchecked, "p", split_key, split_iv)
    add(unchecked, "q", split_key, with_tail(split_iv, {15: 1}))
    plain = v1.format_reading(values(rng))
    wires = [encrypt(key, iv, plain), encrypt(*solo, plain), encrypt(split_key, split_iv, plain),
             encrypt(split_key, with_tail(split_iv, {15: 1}), plain, "per_block"), encrypt(key, iv, plain)]
    batch = [{"id": n, "op": "v1", "conn": n, "src": "x", "blocks": w.decode().replace("+", ""),
              "final": False} for n, w in enumerate(wires)]
    expected = [("rejected", None), ("ok", "solo"), ("ok", "p"), ("ok", "q"), ("rejected", None)]
    batched = service_on(unchecked)
    pre = batched.identify_batch(batch, "x")
    assert all(p is not None for p in pre)
    assert [len(p.matches) for p in pre] == [2, 1, 2, 2, 2]
    answers = [batched.handle(r, "x", p) for r, p in zip(batch, pre, strict=True)]
    assert [(a["status"], a["device"]) for a in answers] == expected
    assert [a.get("reason") for a in answers] == ["ambiguous_key", None, None, None, "ambiguous_key"]
    single = service_on(unchecked)
    assert [(single.handle(r, "y")["status"]) for r in batch] == [e[0] for e in expected]


def test_start_reports_each_clash_group(unchecked, state, config_env, procs):
    rng = random.Random(7)
    key, iv, key2, iv2 = text(rng), text(rng), text(rng), text(rng)
    add(unchecked, "a", key, iv)
    add(unchecked, "b", key, with_tail(iv, {12: 1}))
    add(unchecked, "c", key2, iv2)
    unchecked.revoke("c")
    add(unchecked, "d", key2, iv2)
    add(unchecked, "fine", text(rng), text(rng))
    proc = procs.start("auth", [sys.executable, "-m", "services.auth"], env=config_env)
    wait_until(lambda: state.auth_socket.exists() or proc.poll() is not None, 10, what="auth socket")
    log = (procs.log_dir / "auth.log").read_text()
    clashes = [dict(f.split("=", 1) for f in ln.split() if "=" in f)
               for ln in log.splitlines() if "event=credential_clash" in ln]
    groups = sorted((c["devices"], c["credentials"]) for c in clashes)
    assert groups == [("a,b", "a:1,b:1"), ("c,d", "c:1,d:1")]
    assert not any(s in log for s in (key, iv, key2, iv2))
    metrics = wait_until(lambda: (p := state.run_dir / "metrics-auth.prom").exists() and p.read_text(), 5,
                         what="metrics file")
    assert parse_prometheus(metrics)["medsec_auth_v1_credential_clashes"] == 2
    # And the real process refuses to pick: a reading of c or d decodes under both.
    client = AuthClient(state.auth_socket)
    try:
        answer = client.reading(1, encrypt(key2, iv2, v1.format_reading(values(rng))))
        assert (answer["status"], answer["reason"]) == ("rejected", "ambiguous_key")
    finally:
        client.close()
