"""The real `python -m services.auth` process, driven through its Unix socket."""
from __future__ import annotations

import json
import os
import signal
import sys

import pytest

from services.common import authwire
from services.keystore.credentials import make_secret
from services.keystore.models import NewDevice
from tests.auth.test_v2 import device as v2_device
from tests.auth.test_v2 import frame as v2_frame
from tests.auth.wire import AuthClient, encrypt
from tests.support.proc import wait_until

KEY, IV = "1234567890123456", "AAAAAAAAAAAAAAAA"
GOOD = '{"Temp":"36.600","TempMcu":"23.700","PulseSig":"2.123","Acel_x":"0.000","Acel_y":"-0.50",' \
       '"Acel_z":"1.000","TempMpu":"23.400"}'


def add(store, device_id: str, key: str = KEY, iv: str = IV, protocol: str = "v1"):
    fields = {"key": key, "iv": iv} if protocol == "v1" else {}
    return store.add(NewDevice(device_id, protocol, make_secret(protocol, fields)))


@pytest.fixture
def client(auth_proc, state):
    c = AuthClient(state.auth_socket)
    yield c
    c.close()


def log_text(procs) -> str:
    return (procs.log_dir / "auth.log").read_text()


def test_every_vector_decodes_to_its_plaintext(store, client, vectors):
    pairs = sorted({(v["key"], v["iv"]) for v in vectors})
    for n, (key, iv) in enumerate(pairs):
        add(store, f"dev-{n}", key, iv)
    names = {pair: f"dev-{n}" for n, pair in enumerate(pairs)}
    for conn, vector in enumerate(vectors):
        answer = client.reading(conn, vector["wire"], final=False)
        assert answer["status"] == "ok", (answer, vector["plaintext"])
        assert answer["device"] == names[(vector["key"], vector["iv"])]
        assert answer["values"] == json.loads(vector["plaintext"])
        assert answer["variant"] == vector["variant"]


def test_session_keeps_device_and_variant(store, client):
    add(store, "pico-1")
    for variant in ("chained", "per_block"):
        conn = 1 if variant == "chained" else 2
        for _ in range(3):
            answer = client.reading(conn, encrypt(KEY, IV, GOOD, variant), final=True)
            assert (answer["status"], answer["device"], answer["variant"]) == ("ok", "pico-1", variant)


def test_incomplete_reading_answers_more(store, client):
    add(store, "pico-1")
    wire = encrypt(KEY, IV, GOOD).split(b"+")
    assert client.reading(1, b"+".join(wire[:3]))["status"] == "more"
    assert client.reading(1, b"+".join(wire))["status"] == "ok"


def test_device_added_while_running_is_identified_at_once(store, client):
    wire = encrypt("n" * 16, IV, GOOD)
    assert client.reading(1, wire)["reason"] == "unknown_key"
    add(store, "late", key="n" * 16)
    assert client.reading(2, wire)["device"] == "late"


@pytest.mark.parametrize("plaintext, reason", [
    ('{"Temp":"36.600", this is not json at all', "not_json"),
    ('{"Temp":"36.600","TempMcu":"23.700"}', "missing_field"),
    (GOOD.replace('"36.600"', '"99.000"'), "out_of_range"),
    (GOOD.replace('"2.123"', '"abcde"'), "not_numeric"),
])
def test_bad_readings_rejected_with_reason(store, client, procs, plaintext, reason):
    add(store, "pico-1")
    answer = client.reading(7, encrypt(KEY, IV, plaintext), final=False)
    assert (answer["status"], answer["reason"], answer["device"]) == ("rejected", reason, "pico-1")
    wait_until(lambda: f"reason={reason}" in log_text(procs), 5, what="rejection log line")
    assert KEY not in log_text(procs)


def test_unknown_key_and_bad_requests(store, client, procs):
    add(store, "pico-1")
    answer = client.reading(1, encrypt("u" * 16, IV, GOOD))
    assert answer == {"id": answer["id"], "status": "rejected", "reason": "unknown_key",
                      "detail": answer["detail"], "device": None}
    assert client.ask({"op": "v1", "conn": 2, "blocks": "abc"})["reason"] == "bad_request"
    assert client.ask({"op": "v1", "conn": 4, "blocks": "zz" * 16})["reason"] == "bad_request"
    assert client.ask({"op": "nope", "conn": 5})["reason"] == "bad_request"
    assert client.ask({"op": "v1", "conn": "x", "blocks": "00" * 16})["reason"] == "bad_request"
    # The service is still fine after bad requests.
    assert client.reading(3, encrypt(KEY, IV, GOOD))["status"] == "ok"


def test_a_refused_connection_stays_refused_until_closed(store, client, procs):
    """The proxy pipelines a connection's readings: those behind a refused one are answered
    `closed` (never identified afresh, never counted, never logged) until the proxy closes it."""
    add(store, "pico-1")
    good = encrypt(KEY, IV, GOOD)
    assert client.reading(7, encrypt("u" * 16, IV, GOOD))["reason"] == "unknown_key"
    behind = client.reading(7, good)
    assert (behind["status"], behind["reason"], behind["device"]) == ("rejected", "closed", None)
    assert client.reading(8, good)["status"] == "ok"  # other connections are served
    client.ask({"op": "close", "conn": 7})
    assert client.reading(7, good)["status"] == "ok"  # a new connection under the same number
    assert "conn=7" in log_text(procs) and "reason=closed" not in log_text(procs)


def test_revoked_mid_session_and_after(store, client):
    add(store, "pico-1")
    add(store, "pico-2", key="2" * 16)
    wire = encrypt(KEY, IV, GOOD)
    assert client.reading(1, wire)["status"] == "ok"
    assert client.reading(2, encrypt("2" * 16, IV, GOOD))["status"] == "ok"
    store.revoke("pico-1")
    answer = client.reading(1, wire)
    assert (answer["status"], answer["reason"], answer["device"]) == ("rejected", "revoked", "pico-1")
    assert client.reading(3, wire)["reason"] == "revoked"
    # Other devices are unaffected.
    assert client.reading(2, encrypt("2" * 16, IV, GOOD))["status"] == "ok"


def test_v2_device_is_never_a_v1_candidate(store, client):
    add(store, "pico-v2", protocol="v2")
    creds = store.credentials("v2")
    assert len(creds) == 1
    assert client.reading(1, encrypt(KEY, IV, GOOD))["reason"] == "unknown_key"


def test_pipelined_requests_answered_in_order(store, client):
    add(store, "pico-1")
    good, bad = encrypt(KEY, IV, GOOD), encrypt("u" * 16, IV, GOOD)
    sent = []
    payload = bytearray()
    from services.common import authwire
    for i in range(200):
        wire = bad if i % 10 == 9 else good
        sent.append((1000 + i, i % 10 == 9))
        payload += authwire.encode({"id": 1000 + i, "op": "v1", "conn": i, "src": "x",
                                    "blocks": wire.decode().replace("+", ""), "final": False})
    client.sock.sendall(payload)
    for rid, is_bad in sent:
        answer = client.recv()
        assert answer["id"] == rid
        assert answer["status"] == ("rejected" if is_bad else "ok")


def test_connections_of_two_proxies_are_separate(store, auth_proc, state):
    add(store, "a", key="a" * 16)
    add(store, "b", key="b" * 16)
    one, two = AuthClient(state.auth_socket), AuthClient(state.auth_socket)
    assert one.reading(1, encrypt("a" * 16, IV, GOOD))["device"] == "a"
    assert two.reading(1, encrypt("b" * 16, IV, GOOD, "per_block"))["device"] == "b"
    assert one.reading(1, encrypt("a" * 16, IV, GOOD))["device"] == "a"
    assert one.ask({"op": "close", "conn": 1})["status"] == "closed"
    one.close()
    two.close()


def test_counters_flushed_in_batches(store, client):
    add(store, "pico-1")
    for _ in range(5):
        assert client.reading(1, encrypt(KEY, IV, GOOD))["status"] == "ok"
    device = wait_until(lambda: (d := store.get("pico-1")).readings == 5 and d, 5, what="counters flushed")
    assert device.connections == 1 and device.last_seen


def test_counters_of_more_devices_than_one_chunk_all_land(store, client):
    """The server writes the counters in chunks of SEEN_CHUNK devices, all within the same tick."""
    keys = [f"{i:016d}" for i in range(150)]
    for i, key in enumerate(keys):
        add(store, f"many-{i}", key=key)
    for conn, key in enumerate(keys):
        assert client.reading(conn, encrypt(key, IV, GOOD))["status"] == "ok"
    wait_until(lambda: all(store.get(f"many-{i}").readings == 1 for i in range(150)), 5,
               what="every device's counters flushed")


def test_rotation_overlap_then_old_key_refused(store, client):
    add(store, "pico-1")
    old = encrypt(KEY, IV, GOOD)
    assert client.reading(1, old)["status"] == "ok"
    new_secret = make_secret("v1")
    store.rotate("pico-1", new_secret, grace=3600)
    new = encrypt(new_secret["key"], new_secret["iv"], GOOD)
    # During the overlap: the old key on a live and on a new connection.
    assert client.reading(1, old)["status"] == "ok"
    assert client.reading(2, old)["status"] == "ok"
    # First use of the new key ends the overlap.
    assert client.reading(3, new)["device"] == "pico-1"
    assert client.reading(4, old)["reason"] == "key_expired"
    assert client.reading(1, old)["reason"] == "key_expired"
    assert client.reading(3, new)["status"] == "ok"
    assert store.get("pico-1").state() == "active"


def test_rotation_grace_end_refuses_old_key(store, client):
    add(store, "pico-1")
    new_secret = make_secret("v1")
    store.rotate("pico-1", new_secret, grace=0.3)
    old = encrypt(KEY, IV, GOOD)
    assert client.reading(1, old)["status"] == "ok"
    wait_until(lambda: client.reading(2, old)["status"] == "rejected", 5, what="grace end")
    assert client.reading(3, old)["reason"] == "key_expired"
    assert client.reading(4, encrypt(new_secret["key"], new_secret["iv"], GOOD))["status"] == "ok"


def test_sigterm_exits_cleanly(auth_proc, state, procs):
    assert state.auth_socket.exists()
    os.kill(auth_proc.pid, signal.SIGTERM)
    assert auth_proc.wait(10) == 0
    assert not state.auth_socket.exists()
    assert "event=stopped" in log_text(procs)


def test_refuses_to_start_with_wide_key_permissions(state, config_env, procs):
    os.chmod(state.master_key_path, 0o644)
    proc = procs.start("auth", [sys.executable, "-m", "services.auth"], env=config_env)
    assert proc.wait(10) == 1
    assert "0600" in log_text(procs) and "Traceback" not in log_text(procs)


def test_a_notification_is_carried_out_and_not_answered(store, client, procs):
    """Requests without an id (the proxy's v2acked and close) get no answer: the next answer on the
    socket is the next request's, and what the notification said was done."""
    keys = v2_device(store, "pico-notified")
    assert client.ask(v2_frame(keys, 1))["status"] == "ok"
    client.sock.sendall(authwire.encode({"op": "v2acked", "conn": 1, "kid": keys.kid.hex(), "seq": 1})
                        + authwire.encode({"op": "v2acked", "conn": 1, "kid": keys.kid.hex(), "seq": 9})
                        + authwire.encode({"op": "close", "conn": 1}))
    again = client.ask(v2_frame(keys, 1))  # the answer right after is this request's (ask checks its id)
    assert again["status"] == "duplicate"  # the first v2acked marked seq 1 acknowledged
    wait_until(lambda: "reason=not_verified" in log_text(procs), 5, what="the bad notification logged")
