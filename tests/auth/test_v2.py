"""Protocol v2 in auth (services/auth/v2.py): counter before decryption, persisted window, acks."""
from __future__ import annotations

import base64
import threading

import pytest
from Crypto.Cipher import AES

from services.auth.service import MAX_FRAMES, AuthService
from services.common import v1, v2, v2device
from services.common.v2 import ReplayWindow
from services.keystore.backends import open_store
from services.keystore.credentials import make_secret
from services.keystore.models import DeviceExists, NewDevice

GOOD = {"Temp": 36.6, "TempMcu": 23.7, "PulseSig": 2.123, "Acel_x": 0.0, "Acel_y": -0.5,
        "Acel_z": 1.0, "TempMpu": 23.4}


def device(store, device_id: str) -> v2.Keys:
    secret = make_secret("v2")
    store.add(NewDevice(device_id, "v2", secret))
    return v2.derive_keys(bytes.fromhex(secret["master_key"]), bytes.fromhex(secret["key_id"]))


def frame(keys: v2.Keys, seq: int, plaintext: bytes | None = None) -> dict:
    raw = v2device.seal_reading(keys.cipher("d2g"), keys.common_iv, keys.kid, seq,
                                plaintext or v1.format_reading(GOOD))
    return {"id": seq, "op": "v2", "conn": 1, "src": "127.0.0.1:1", "frame": base64.b64encode(raw).decode()}


def ack(keys: v2.Keys, seq: int) -> dict:
    return {"id": seq, "op": "v2ack", "conn": 1, "kid": keys.kid.hex(), "seq": seq}


def answer_of(keys: v2.Keys, frame_b64: str) -> tuple[int, int, int]:
    """(kind, seq, reason code) of an answer frame, verified as the device verifies it."""
    raw = base64.b64decode(frame_b64)
    kind, seq, code, used = v2device.open_answer(keys.cipher("g2d"), keys.common_iv, keys.kid, raw)
    assert used == len(raw)
    return kind, seq, code


def ack_seq(keys: v2.Keys, answer: dict) -> int:
    kind, seq, _ = answer_of(keys, answer["ack"])
    assert kind == v2.ACK
    return seq


def test_accept_ack_duplicate_and_redelivery_survive_a_restart(store):
    keys = device(store, "pico-v2")
    auth = AuthService(store)
    first = auth.handle(frame(keys, 1))
    assert first["status"] == "ok" and first["device"] == "pico-v2" and first["seq"] == 1
    assert first["values"]["Temp"] == "36.600" and first["redelivery"] is False
    assert auth.handle(frame(keys, 2))["status"] == "ok"
    answer = auth.handle(ack(keys, 1))
    assert answer["status"] == "ok" and ack_seq(keys, answer) == 1
    # an ack bit not yet flushed is lost in a crash: the duplicate is then published again
    # (the publisher drops it by seq) and acked, never refused and never lost
    crashed = AuthService(store)
    assert crashed.handle(frame(keys, 1))["redelivery"] is True
    auth.flush()  # what the server does once a second
    # seq 2 verified but never acked (its PUBACK never came): auth restarts
    restarted = AuthService(store)
    again = restarted.handle(frame(keys, 1))
    assert again["status"] == "duplicate" and again["ack"] == answer["ack"] and "values" not in again
    redelivered = restarted.handle(frame(keys, 2))
    assert redelivered["status"] == "ok" and redelivered["redelivery"] is True
    assert ack_seq(keys, restarted.handle(ack(keys, 2))) == 2
    assert restarted.handle(frame(keys, 2))["status"] == "duplicate"


def test_counter_is_checked_before_decryption_and_moves_only_on_a_good_tag(store):
    keys = device(store, "pico-ctr")
    auth = AuthService(store)
    assert auth.handle(frame(keys, 100))["status"] == "ok"
    low = auth.handle(frame(keys, 100 - ReplayWindow.WINDOW))
    assert low["status"] == "rejected" and low["reason"] == "old_seq" and low["device"] == "pico-ctr"
    for seq in (101, 90):  # above the window's last, and a late one inside it
        forged = frame(keys, seq)
        raw = bytearray(base64.b64decode(forged["frame"]))
        raw[-1] ^= 1
        forged["frame"] = base64.b64encode(bytes(raw)).decode()
        assert auth.handle(forged)["reason"] == "bad_tag"
        assert auth.handle(frame(keys, seq))["status"] == "ok"  # the forgery did not spend the seq
    # a verified frame with a bad reading still spends its seq, and is never acked
    bad = auth.handle(frame(keys, 102, b'{"Temp":"1"}'))
    assert bad["status"] == "rejected" and bad["reason"] == "missing_field"
    assert auth.handle(ack(keys, 103))["reason"] == "not_verified"  # never sent: no ack
    resent = auth.handle(frame(keys, 102, b'{"Temp":"1"}'))
    assert resent["reason"] == "missing_field"  # the same verdict when the device sends it again


def test_a_verified_reading_refused_for_good_gets_an_authenticated_refusal(store):
    keys = device(store, "pico-refuse")
    auth = AuthService(store)
    cases = {
        "out_of_range": v1.format_reading({**GOOD, "Temp": 99.0}),
        "not_numeric": v1.format_reading(GOOD).replace(b'"36.600"', b'"hot"'),
        "missing_field": b'{"Temp":"1"}',
        "not_json": b"\x00garbage",
    }
    for seq, (reason, plaintext) in enumerate(cases.items(), start=1):
        answer = auth.handle(frame(keys, seq, plaintext))
        assert answer["status"] == "rejected" and answer["reason"] == reason
        assert answer_of(keys, answer["refusal"]) == (v2.REFUSAL, seq, v2device.REASON_CODES[reason])
        again = auth.handle(frame(keys, seq, plaintext))  # the device resends it: the same bytes again
        assert again["refusal"] == answer["refusal"]
    # Frames that do not verify (or are refused before verification) get no refusal: no proof they are
    # the device's.
    forged = frame(keys, 20)
    raw = bytearray(base64.b64decode(forged["frame"]))
    raw[-1] ^= 1
    forged["frame"] = base64.b64encode(bytes(raw)).decode()
    assert "refusal" not in auth.handle(forged)
    assert auth.handle(frame(keys, 100))["status"] == "ok"
    old = auth.handle(frame(keys, 25, b'{"Temp":"1"}'))  # older than the window: not decrypted
    assert old["reason"] == "old_seq" and "refusal" not in old
    stranger = v2.derive_keys(bytes(16), b"\x00\x00\x00\x07")
    assert "refusal" not in auth.handle(frame(stranger, 1, b"{}"))


def test_unknown_kid_revoked_and_bad_requests(store):
    keys = device(store, "pico-rev")
    auth = AuthService(store)
    stranger = v2.derive_keys(bytes(16), b"\x00\x00\x00\x01")
    assert auth.handle(frame(stranger, 1))["reason"] == "unknown_kid"
    assert auth.handle({"id": 1, "op": "v2", "conn": 1, "frame": "%%%"})["reason"] == "bad_request"
    two = base64.b64encode(base64.b64decode(frame(keys, 1)["frame"]) * 2).decode()
    assert auth.handle({"id": 1, "op": "v2", "conn": 1, "frame": two})["reason"] == "bad_request"
    assert auth.handle(ack(keys, 1))["reason"] == "not_verified"
    store.revoke("pico-rev")
    auth.refresh(force=True)  # another process revokes in production; this store is the same connection
    answer = auth.handle(frame(keys, 1))
    assert answer["reason"] == "revoked" and answer["device"] == "pico-rev"


def test_a_v2_device_is_not_served_over_v1(store):
    secret = make_secret("v2")
    store.add(NewDevice("pico-only-v2", "v2", secret))
    auth = AuthService(store)
    master = bytes.fromhex(secret["master_key"])
    # the device's own key material used as a v1 key and iv: v1 identification knows no such device
    wire = v1.encrypt(AES.new(master, AES.MODE_ECB).encrypt, master, v1.format_reading(GOOD), "chained")
    blocks = wire.replace(b"+", b"").decode()
    answer = auth.handle({"id": 1, "op": "v1", "conn": 7, "src": "x", "blocks": blocks, "final": True})
    assert answer["status"] == "rejected" and answer["reason"] == "unknown_key"


def test_two_auth_instances_on_one_store_never_accept_a_seq_twice(store, store_config):
    """Scale-out: an instance whose cached window is stale loses the store's compare-and-set,
    reloads the window and answers per the stored window, never "ok" for a new seq again."""
    keys = device(store, "pico-twice")
    other = open_store(store_config)  # another auth instance: its own connection to the same store
    try:
        a, b = AuthService(store), AuthService(other)
        assert a.handle(frame(keys, 4))["status"] == "ok"
        assert b.handle(frame(keys, 4))["redelivery"] is True  # b's window is cached now: last 4
        first = a.handle(frame(keys, 5))
        assert first["status"] == "ok" and first["redelivery"] is False
        # the same frame replayed to b, whose cache still says last 4: verified, never acked
        replayed = b.handle(frame(keys, 5))
        assert replayed["status"] == "ok" and replayed["redelivery"] is True
        assert ReplayWindow.from_text(store.v2_window(keys.kid.hex())).last == 5
        # acknowledged by a and flushed: b (cache stale again after a accepts 6) re-acks, publishes nothing
        assert a.handle(frame(keys, 6))["redelivery"] is False
        acked = a.handle(ack(keys, 6))
        a.flush()
        dup = b.handle(frame(keys, 6))
        assert dup["status"] == "duplicate" and dup["ack"] == acked["ack"] and "values" not in dup
        assert ReplayWindow.from_text(store.v2_window(keys.kid.hex())).last == 6
        # a seq older than the window of what a accepted since: refused, and the window stays
        assert a.handle(frame(keys, 100))["status"] == "ok"
        old = b.handle(frame(keys, 30))
        assert old["status"] == "rejected" and old["reason"] == "old_seq" and old["device"] == "pico-twice"
        assert ReplayWindow.from_text(store.v2_window(keys.kid.hex())).last == 100
        # b's flush of what it holds never moves the stored window back, and b goes on normally
        b.flush()
        assert ReplayWindow.from_text(store.v2_window(keys.kid.hex())).last == 100
        assert b.handle(frame(keys, 101))["redelivery"] is False
        assert a.handle(frame(keys, 101))["redelivery"] is True
    finally:
        other.close()


def test_a_stale_instance_with_its_own_cache_does_not_accept_the_seq_its_peer_accepted(store, store_config):
    keys = device(store, "pico-stale")
    other = open_store(store_config)
    try:
        a, b = AuthService(store), AuthService(other)
        assert b.handle(ack(keys, 1))["reason"] == "not_verified"  # b loads the (empty) window
        assert a.handle(frame(keys, 5))["redelivery"] is False
        answer = b.handle(frame(keys, 5))
        assert not (answer["status"] == "ok" and answer["redelivery"] is False)
        assert store.v2_window(keys.kid.hex()).startswith("5:")
    finally:
        other.close()


def test_counters_are_flushed_in_chunks_and_none_is_lost(store):
    """The server writes the counters of SEEN_CHUNK devices at a time and serves its clients in
    between (one write of 1,000 devices held its loop for 20 ms); every device gets there."""
    keys = [device(store, f"chunk-{i}") for i in range(7)]
    auth = AuthService(store)
    for k in keys:
        assert auth.handle(frame(k, 1))["status"] == "ok"
    assert auth.handle(frame(keys[0], 2))["status"] == "ok"
    rounds = 1
    while auth.flush(3):
        rounds += 1
    assert rounds == 3
    assert [store.get(f"chunk-{i}").readings for i in range(7)] == [2, 1, 1, 1, 1, 1, 1]
    assert not auth.flush(3) and store.get("chunk-0").readings == 2  # nothing twice


def test_advance_v2_window_is_a_compare_and_set(store, store_config):
    """A window is written only over the stored one it was built from (what that one accepted:
    last and verified bits; ack bits may differ), and an ack-bit flush only over the same state."""
    assert store.advance_v2_window("kid-cas", "dev", "5:1:0", "0:0:0") is True  # no row yet: wins
    assert store.v2_window("kid-cas") == "5:1:0"
    other = open_store(store_config)
    try:
        assert other.advance_v2_window("kid-cas", "dev", "5:1:0", "0:0:0") is False  # stale base: loses
        assert other.advance_v2_window("kid-cas", "dev", "6:3:0", "4:1:0") is False
        assert store.v2_window("kid-cas") == "5:1:0"
        assert other.advance_v2_window("kid-cas", "dev", "6:3:0", "5:1:1") is True  # acks apart: wins
        assert store.v2_window("kid-cas") == "6:3:0"
        assert store.advance_v2_window("kid-cas", "dev", "6:7:0", "6:3:0") is True  # a late seq (4)
        assert other.advance_v2_window("kid-cas", "dev", "6:7:0", "6:3:0") is False  # ... once
        # ack-bit flushes: written over the same accepted state only, never over a newer one
        assert store.save_v2_window("kid-cas", "dev", "6:7:1") is True
        assert other.v2_window("kid-cas") == "6:7:1"
        assert store.save_v2_window("kid-cas", "dev", "6:3:3") is False  # a copy from before seq 4
        assert store.save_v2_window("kid-cas", "dev", "5:1:1") is False
        assert other.v2_window("kid-cas") == "6:7:1"
        big = v2.SEQ_MAX  # 2**40 - 1: beyond 32 bits
        assert other.advance_v2_window("kid-cas", "dev", f"{big}:1:0", "6:7:1") is True
        assert store.advance_v2_window("kid-cas", "dev", f"{big}:1:0", "6:7:0") is False
        assert store.save_v2_window("kid-cas", "dev", "7:1:0") is False
        assert store.v2_window("kid-cas") == f"{big}:1:0"
        # racing handles: exactly one wins each seq
        barrier = threading.Barrier(2)

        def race(handle, seq, wins):
            barrier.wait()
            wins.append(handle.advance_v2_window("kid-race", "dev", f"{seq}:1:0", f"{seq - 1}:1:0"))

        store.advance_v2_window("kid-race", "dev", "0:1:0", "0:0:0")
        for seq in range(1, 11):
            wins: list[bool] = []
            threads = [threading.Thread(target=race, args=(h, seq, wins)) for h in (store, other)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(wins) == [False, True]
        assert store.v2_window("kid-race") == "10:1:0"
    finally:
        other.close()


def test_a_batch_writes_a_run_of_advances_of_one_key_once(store, store_config, monkeypatch):
    """Issue 13: inside a batch a key's first advance reads the stored window under a lock held
    until the commit and writes nothing; the later ones are compared with what the batch made of
    the window, and only the last is written, before the commit: one write for the run. Another
    instance waits for the lock, sees the last window after the commit, and its compare-and-set
    against an older one loses; a batch that fails writes nothing."""
    writes = []
    real = store._write_window_if
    monkeypatch.setattr(store, "_write_window_if", lambda *a: writes.append(a[2]) or real(*a))
    store.advance_v2_window("kid-run", "dev", "0:1:0", "0:0:0")
    other = open_store(store_config)
    lost: list[bool] = []
    try:
        writes.clear()
        with store.batch():
            assert store.advance_v2_window("kid-run", "dev", "1:3:0", "0:1:0")
            racer = threading.Thread(target=lambda: lost.append(
                other.advance_v2_window("kid-run", "dev", "1:3:0", "0:1:0")))
            racer.start()  # waits for the batch's lock
            assert store.advance_v2_window("kid-run", "dev", "2:7:1", "1:3:0")
            assert not store.advance_v2_window("kid-run", "dev", "2:7:0", "0:1:0")  # stale: loses
            assert store.advance_v2_window("kid-run", "dev", "3:15:1", "2:7:0")  # ack bits apart
            assert writes == [] and lost == []  # the racer still waits for the row
        racer.join(15)
        assert writes == ["3:15:1"] and lost == [False]
        assert other.v2_window("kid-run") == "3:15:1"

        writes.clear()
        with store.batch():  # a read inside the batch sees the batch's window
            assert store.advance_v2_window("kid-run", "dev", "4:1:0", "3:15:1")
            assert store.advance_v2_window("kid-run", "dev", "5:3:0", "4:1:0")
            assert store.v2_window("kid-run") == "5:3:0"
            assert store.advance_v2_window("kid-run", "dev", "6:7:0", "5:3:0")
        assert writes == ["5:3:0", "6:7:0"] and other.v2_window("kid-run") == "6:7:0"

        writes.clear()
        with store.batch():  # no stored window yet: inserted at once (no row to lock), the last at the end
            assert store.advance_v2_window("kid-fresh", "dev", "1:1:0", "0:0:0")
            assert store.advance_v2_window("kid-fresh", "dev", "2:3:0", "1:1:0")
            assert writes == ["1:1:0"]
        assert writes == ["1:1:0", "2:3:0"] and other.v2_window("kid-fresh") == "2:3:0"

        with pytest.raises(RuntimeError), store.batch():
            assert store.advance_v2_window("kid-run", "dev", "7:1:0", "6:7:0")
            assert store.advance_v2_window("kid-run", "dev", "8:3:0", "7:1:0")
            raise RuntimeError("the stretch failed")
        assert other.v2_window("kid-run") == store.v2_window("kid-run") == "6:7:0"
        assert store.advance_v2_window("kid-run", "dev", "7:1:0", "6:7:0")  # outside: written at once
        assert other.v2_window("kid-run") == "7:1:0"
    finally:
        other.close()


def test_a_stretch_writes_a_keys_run_of_frames_at_its_first_and_its_last(store, store_config, monkeypatch):
    """Issue 13: in a stretch (AuthService.committed) a device's first new seq locks its stored
    window (the stretch then holds the row) and compares, its later ones only advance the cached
    window, and the last state is written before the commit: one write for a run.
    Another instance with an older window loses its compare-and-set and classifies the seq
    against the stored window; a stretch that fails writes nothing of its advances."""
    keys = device(store, "pico-run")
    kid = keys.kid.hex()
    writes: list[str] = []
    real = store._write_window_if
    monkeypatch.setattr(store, "_write_window_if", lambda *a: writes.append(a[2]) or real(*a))
    other_store = open_store(store_config)
    try:
        first, second = AuthService(store), AuthService(other_store)
        assert second.handle(frame(keys, 1))["status"] == "ok"  # `second` caches the window at 1
        with first.committed():
            answers = [first.handle(frame(keys, seq)) for seq in (2, 3, 4, 3, 6, 5)]
        assert [(a["status"], a["redelivery"]) for a in answers] == [("ok", False)] * 3 + [
            ("ok", True), ("ok", False), ("ok", False)]  # 3 again: verified, never acked
        assert [w.split(":")[0] for w in writes] == ["6"]
        assert other_store.v2_window(kid).startswith("6:3f:")  # 1 to 6, every one verified
        assert second.handle(frame(keys, 4))["redelivery"] is True  # its window was stale: reloaded
        assert second.handle(frame(keys, 7))["status"] == "ok"
        writes.clear()
        with first.committed():  # a lone frame: its locked read found 7 accepted elsewhere, then won
            assert first.handle(frame(keys, 8))["status"] == "ok"
        assert [w.split(":")[0] for w in writes] == ["8"] and store.v2_window(kid).startswith("8:ff:")
        with pytest.raises(RuntimeError), first.committed():
            assert [first.handle(frame(keys, seq))["status"] for seq in (9, 10, 11)] == ["ok"] * 3
            raise RuntimeError("the stretch failed")
        assert other_store.v2_window(kid).startswith("8:ff:")
        again = first.handle(frame(keys, 10))  # nothing of the failed stretch was kept
        assert again["status"] == "ok" and again["redelivery"] is False
    finally:
        other_store.close()


def test_a_credentials_reload_inside_a_stretch_keeps_the_stretchs_own_window(store):
    """A reload of the credentials can drop a key's cached window in the middle of a stretch (the
    key gone, then back). The stretch's own window, ahead of the store's until the commit, is the
    one used after it: a seq accepted before the reload is never taken as new again."""
    keys = device(store, "pico-reload")
    auth = AuthService(store)
    with auth.committed():
        assert [auth.handle(frame(keys, seq))["status"] for seq in (1, 2, 3)] == ["ok"] * 3
        auth._v2.load([])  # as a reload that no longer finds the key
        assert auth.handle(frame(keys, 4))["reason"] == "unknown_kid"
        auth.refresh(force=True)  # the key is back
        again = auth.handle(frame(keys, 2))
        assert again["status"] == "ok" and again["redelivery"] is True
        assert auth.handle(frame(keys, 4))["redelivery"] is False
    assert store.v2_window(keys.kid.hex()).startswith("4:f:")


class FailingWrites:
    """The key store, whose next `fail` window writes raise as a restarting PostgreSQL makes them."""

    def __init__(self, store) -> None:
        self._store = store
        self.fail = 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def advance_v2_window(self, *args):
        if self.fail:
            self.fail -= 1
            raise ConnectionError("server closed the connection unexpectedly")
        return self._store.advance_v2_window(*args)


def test_a_reading_refused_by_a_store_outage_is_accepted_when_resent_after_later_ones(store):
    """What stopped every device after a PostgreSQL restart in the compose fault test: the write of
    one seq failed, the next seqs (already on their way) were accepted, and the resent reading was
    refused as old_seq at every attempt; the device resent it forever. Now it is accepted once."""
    keys = device(store, "pico-gap")
    failing = FailingWrites(store)
    auth = AuthService(failing)
    for seq in range(1, 4):
        assert auth.handle(frame(keys, seq))["status"] == "ok"
    for seq, gaps in ((4, 1), (7, 3)):  # one write fails, then three in a row
        failing.fail = gaps
        for lost in range(seq, seq + gaps):
            with pytest.raises(ConnectionError):
                auth.handle(frame(keys, lost))
        for later in range(seq + gaps, seq + gaps + 2):
            assert auth.handle(frame(keys, later))["redelivery"] is False
    restarted = AuthService(store)  # and after an auth restart, from the stored window
    for answerer, seq in ((auth, 4), (restarted, 7), (restarted, 8), (auth, 9)):
        late = answerer.handle(frame(keys, seq))
        assert late["status"] == "ok" and late["redelivery"] is False and late["values"]["Temp"] == "36.600"
        assert ack_seq(keys, late) == seq
    stored = ReplayWindow.from_text(store.v2_window(keys.kid.hex()))
    assert stored.last == 11 and stored.verified == (1 << 11) - 1  # every seq 1..11, once
    for answerer in (auth, restarted):
        again = answerer.handle(frame(keys, 4))
        assert again["status"] == "ok" and again["redelivery"] is True  # never acked: published again
    assert auth.handle(ack(keys, 4))["status"] == "ok"
    assert auth.handle(frame(keys, 4))["status"] == "duplicate"


def test_two_instances_accept_a_late_seq_once_and_keep_each_others_bits(store, store_config):
    keys = device(store, "pico-late")
    other = open_store(store_config)
    try:
        a, b = AuthService(store), AuthService(other)
        for seq in (1, 3):
            assert a.handle(frame(keys, seq))["redelivery"] is False
        assert b.handle(frame(keys, 3))["redelivery"] is True  # b caches the window: 2 not verified
        assert b.handle(ack(keys, 3))["status"] == "ok"  # an ack bit b has not flushed yet
        assert a.handle(frame(keys, 2))["redelivery"] is False  # late, accepted by a
        twice = b.handle(frame(keys, 2))  # b's cache says new: it loses the compare-and-set
        assert twice["status"] == "ok" and twice["redelivery"] is True
        b.flush()  # b's ack bit lands on the window with seq 2 in it
        stored = ReplayWindow.from_text(store.v2_window(keys.kid.hex()))
        assert (stored.last, stored.verified, stored.acked) == (3, 0b111, 0b001)
        assert a.handle(ack(keys, 2))["status"] == "ok"
        a.flush()  # a's copy lacks b's ack of 3: an ack bit lost costs a redelivery, never a seq
        stored = ReplayWindow.from_text(store.v2_window(keys.kid.hex()))
        assert (stored.last, stored.verified) == (3, 0b111) and stored.acked & 0b010
        fresh = AuthService(store)
        assert fresh.handle(frame(keys, 2))["status"] == "duplicate"
        assert fresh.handle(frame(keys, 3))["status"] in ("duplicate", "ok")
        assert fresh.handle(frame(keys, 1))["status"] in ("duplicate", "ok")
    finally:
        other.close()


def test_the_ok_answer_carries_the_sealed_ack_and_v2acked_marks_it(store):
    """Issue 13: one auth round trip per reading. The ack comes sealed with the ok answer (the proxy
    writes it after the PUBACK); v2acked then marks the seq acknowledged without sealing again."""
    keys = device(store, "pico-acked")
    auth = AuthService(store)
    answers = [auth.handle(frame(keys, seq)) for seq in (1, 2, 3)]
    assert [ack_seq(keys, a) for a in answers] == [1, 2, 3]
    done = auth.handle({"id": 9, "op": "v2acked", "conn": 1, "kid": keys.kid.hex(), "seq": 2})
    assert done == {"id": 9, "status": "ok", "device": "pico-acked", "seq": 2}
    again = auth.handle(frame(keys, 2))  # acknowledged: a resend is a duplicate with the same ack
    assert again["status"] == "duplicate" and again["ack"] == answers[1]["ack"]
    assert auth.handle(frame(keys, 1))["redelivery"] is True  # never reported acked: published again
    kid = keys.kid.hex()
    for bad in ({"kid": kid, "seq": 7}, {"kid": kid, "seq": "2"}, {"kid": "zz", "seq": 2}, {"seq": 2}):
        answer = auth.handle({"id": 1, "op": "v2acked", "conn": 1, **bad})
        assert answer["status"] == "rejected" and answer["reason"] in ("not_verified", "bad_request"), bad


def test_v2acked_with_seqs_marks_each_seq_and_refuses_what_it_cannot_mark(store):
    """The proxy reports the acks it wrote for one bus message in one notification (`seqs`). Each
    seq is marked on its own: one never verified is refused (not_verified) without keeping the
    others unacknowledged; seqs that are not a list of 1 to WINDOW counters are bad requests."""
    keys = device(store, "pico-seqs")
    auth = AuthService(store)
    assert [auth.handle(frame(keys, seq))["status"] for seq in range(1, 6)] == ["ok"] * 5
    kid = keys.kid.hex()
    done = auth.handle({"id": 1, "op": "v2acked", "conn": 1, "kid": kid, "seqs": [1, 2]})
    assert done == {"id": 1, "status": "ok", "device": "pico-seqs", "seqs": [1, 2]}
    mixed = auth.handle({"id": 2, "op": "v2acked", "conn": 1, "kid": kid, "seqs": [3, 9, 4]})
    assert mixed["status"] == "rejected" and mixed["reason"] == "not_verified"
    assert [auth.handle(frame(keys, seq))["status"] for seq in range(1, 6)] == (
        ["duplicate"] * 4 + ["ok"])  # 3 and 4 were marked beside the refused 9; 5 was never reported
    too_many = list(range(1, ReplayWindow.WINDOW + 2))
    for bad in ([], too_many, "1,2", [1, "2"], [True], [0], None):  # None: then "seq" is missing
        answer = auth.handle({"id": 3, "op": "v2acked", "conn": 1, "kid": kid, "seqs": bad})
        assert answer["status"] == "rejected" and answer["reason"] == "bad_request", bad
    # a seqs item is a seq of its own: a null one never stands for the request's "seq"
    both = auth.handle({"id": 5, "op": "v2acked", "conn": 1, "kid": kid, "seqs": [None], "seq": 5})
    assert both["status"] == "rejected" and both["reason"] == "bad_request"
    assert auth.handle(frame(keys, 5))["status"] == "ok"  # 5 still not acknowledged
    unknown = auth.handle({"id": 4, "op": "v2acked", "conn": 1, "kid": "0badc0de", "seqs": [1]})
    assert unknown["status"] == "rejected" and unknown["reason"] == "unknown_kid"


def frames_request(rid: int, raws: list[bytes], count: int | None = None) -> dict:
    """What the proxy sends: a read's whole frames, back to back, in one base64 text."""
    return {"id": rid, "op": "v2", "conn": 1, "src": "127.0.0.1:1",
            "count": len(raws) if count is None else count,
            "frames": base64.b64encode(b"".join(raws)).decode()}


def raw(request: dict) -> bytes:
    return base64.b64decode(request["frame"])


def test_the_frames_of_a_read_in_one_request_are_answered_each_as_on_their_own(store):
    """What the proxy sends: the whole frames of one read of a connection in one request
    (`frames`, `count`). Each frame is answered in order exactly as a request of its own would
    be (ok, duplicate, refusal, tag, unknown key id side by side), one bad frame costs only
    itself, and the window advances are those of the good frames."""
    keys, stranger = device(store, "pico-frames"), device(store, "pico-frames-other")
    bad_tag = bytearray(raw(frame(keys, 5)))
    bad_tag[-1] ^= 1
    unknown = v2.Keys(kid=b"\x0b\xad", d2g=keys.d2g, g2d=keys.g2d, common_iv=keys.common_iv)
    raws = [raw(frame(keys, 1)), raw(frame(keys, 2)), raw(frame(keys, 2)),
            raw(frame(keys, 3, b"not json")), bytes(bad_tag), raw(frame(unknown, 6)),
            raw(frame(keys, 4)), raw(frame(stranger, 1))]
    auth = AuthService(store)
    together = auth.handle(frames_request(7, raws))
    assert together["id"] == 7 and together["status"] == "answers"
    statuses = [(a["status"], a.get("reason"), a.get("seq")) for a in together["answers"]]
    assert statuses == [("ok", None, 1), ("ok", None, 2), ("ok", None, 2), ("rejected", "not_json", None),
                        ("rejected", "bad_tag", None), ("rejected", "unknown_kid", None),
                        ("ok", None, 4), ("ok", None, 1)]
    assert together["answers"][2]["redelivery"] is True  # verified, never acked: published again
    assert answer_of(keys, together["answers"][3]["refusal"])[:2] == (v2.REFUSAL, 3)
    assert [ack_seq(keys, together["answers"][i]) for i in (0, 1, 6)] == [1, 2, 4]
    assert all("id" not in a for a in together["answers"])
    assert store.v2_window(keys.kid.hex()).startswith("4:f:")  # 1 to 4 accepted, 5 (bad tag) not
    assert auth.handle(frame(keys, 5))["status"] == "ok"  # the genuine 5 still goes through


def test_frames_that_do_not_split_into_count_whole_frames_refuse_the_request_whole(store):
    """The proxy sends only frames it has read whole with the same reader: frames that are not
    exactly `count` whole frames back to back (fewer, more, a cut or a stray byte, a bad header
    anywhere, bad base64, a bad count) are a broken proxy, refused whole, nothing accepted."""
    keys = device(store, "pico-split")
    auth = AuthService(store)
    one, two, three = (raw(frame(keys, seq)) for seq in (1, 2, 3))
    bad_type = b"\x7b" + two[1:]
    cases = {
        "fewer frames than count": frames_request(1, [one, two], count=3),
        "more frames than count": frames_request(2, [one, two, three], count=2),
        "a cut last frame": frames_request(3, [one, two[:-1]], count=2),
        "a stray byte after them": frames_request(4, [one, two, b"\x00"], count=2),
        "a bad header in the middle": frames_request(5, [one, bad_type, three]),
        "over MAX_FRAMES": frames_request(6, [one] * (MAX_FRAMES + 1)),
    }
    for count in (0, -1, None, True, "2", 2.0):
        cases[f"count {count!r}"] = {**frames_request(7, [one, two]), "count": count}
    for text in ("", "not base64!", None, ["AAAA"], {"0": "AAAA"}):
        cases[f"frames {text!r}"] = {**frames_request(8, [one]), "frames": text}
    for name, request in cases.items():
        answer = auth.handle(request)
        assert answer["status"] == "rejected" and "answers" not in answer, name
        assert answer["reason"] in ("bad_request", "bad_type"), name
    assert store.v2_window(keys.kid.hex()) in (None, "0:0:0")  # nothing accepted
    assert [a["status"] for a in auth.handle(frames_request(9, [one, two, three]))["answers"]] == ["ok"] * 3


def test_v2acked_with_acks_marks_each_connections_seqs_and_logs_what_it_cannot_mark(store, caplog):
    """What the proxy sends: the acks of one loop turn, every connection's, in one notification
    (`acks`: [conn, kid, seqs] each). Each entry stands alone: a malformed one, an unknown key id
    or a seq never verified is logged as a rejection of that conn, and the others are marked."""
    first, second = device(store, "pico-acks-a"), device(store, "pico-acks-b")
    auth = AuthService(store)
    for keys in (first, second):
        assert [auth.handle(frame(keys, seq))["status"] for seq in (1, 2, 3)] == ["ok"] * 3
    a, b = first.kid.hex(), second.kid.hex()
    acks = [[11, a, [1, 2]], [12, b, [3]], [13, a, [9]], [14, "0badc0de", [1]], [15, "zz", [1]],
            [16, b, []], [17, b, [1, "2"]], [18, b], "junk", [19, b, [True]]]
    caplog.set_level("WARNING", logger="medsec.auth")
    done = auth.handle({"op": "v2acked", "acks": acks})
    assert done == {"id": None, "status": "ok", "marked": 2}
    rejected = [r.getMessage() for r in caplog.records if "event=rejected" in r.getMessage()]
    assert len(rejected) == len(acks) - 2
    assert "reason=not_verified" in rejected[0] and "conn=13" in rejected[0]
    assert "reason=unknown_kid" in rejected[1] and "conn=14" in rejected[1]
    assert all("reason=bad_request" in line for line in rejected[2:])
    assert [auth.handle(frame(first, seq))["status"] for seq in (1, 2, 3)] == ["duplicate"] * 2 + ["ok"]
    assert [auth.handle(frame(second, seq))["status"] for seq in (1, 2, 3)] == ["ok"] * 2 + ["duplicate"]
    for bad in ([], "x", None, {"1": [a, [1]]}):
        answer = auth.handle({"id": 7, "op": "v2acked", "acks": bad})
        assert answer["status"] == "rejected" and answer["reason"] == "bad_request", bad


def test_an_ack_that_comes_after_the_window_moved_past_its_seq_is_taken_quietly(store):
    """A reading's PUBACK can come after the device's later readings (sent again on a new
    connection) moved the window more than WINDOW seqs on: its v2acked has no bit left to set and
    is no error. Seqs a frame cannot carry stay bad requests."""
    keys = device(store, "pico-late-ack")
    auth = AuthService(store)
    window = ReplayWindow.WINDOW
    assert auth.handle(frame(keys, 5))["status"] == "ok"
    assert auth.handle(frame(keys, 5 + window))["status"] == "ok"
    kid = keys.kid.hex()
    late = auth.handle({"id": 1, "op": "v2acked", "conn": 1, "kid": kid, "seq": 5})
    assert late == {"id": 1, "status": "ok", "device": "pico-late-ack", "seq": 5}
    assert auth.handle(frame(keys, 5))["reason"] == "old_seq"  # still refused, as before the ack
    for seq in (0, -3, 1 << 40):
        answer = auth.handle({"id": 2, "op": "v2acked", "conn": 1, "kid": kid, "seq": seq})
        assert answer["status"] == "rejected" and answer["reason"] == "bad_request", seq


def test_the_window_writes_of_a_stretch_of_answers_are_committed_together(store, store_config):
    """AuthService.committed(): the frames answered inside share one commit at its end (another
    connection sees none of them before), on SQLite and PostgreSQL. A transaction nested in it (an
    audit entry, a failing add) is a savepoint; an exception inside writes nothing."""
    keys = device(store, "pico-batch")
    kid = keys.kid.hex()
    other = open_store(store_config)
    try:
        auth = AuthService(store)
        with auth.committed():
            for seq in (1, 2, 3):
                assert auth.handle(frame(keys, seq))["status"] == "ok"
            seen_inside = other.v2_window(kid)
            store.append_audit("test", "batch_probe", "pico-batch", {})
            with pytest.raises(DeviceExists):
                store.add(NewDevice("pico-batch", "v2", make_secret("v2")))
        assert seen_inside == "0:0:0"
        assert other.v2_window(kid).startswith("3:7:")
        assert [e.action for e in other.audit()][-1] == "batch_probe"
        with auth.committed():  # a stretch without writes takes no write lock: others write meanwhile
            other.add(NewDevice("pico-batch-2", "v1", make_secret("v1")))
        with pytest.raises(RuntimeError), auth.committed():
            assert auth.handle(frame(keys, 4))["redelivery"] is False
            raise RuntimeError("the commit failed")
        assert other.v2_window(kid).startswith("3:7:")
        again = auth.handle(frame(keys, 4))  # the cached window was forgotten: the store's is used
        assert again["status"] == "ok" and again["redelivery"] is False
    finally:
        other.close()
