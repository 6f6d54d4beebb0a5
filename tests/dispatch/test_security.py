"""Done when 2-4: turn order, forged / altered / replayed envelopes, and the ACL, on a real broker.

Each refusal or rejection must leave the recorded workflow state byte for byte as it was.
"""
from __future__ import annotations

import time

import pytest

from services.common import envelope
from tests.dispatch.conftest import Probe
from tests.support.broker import Subscriber, connack
from tests.support.proc import wait_until


def state_bytes(dstack) -> bytes:
    return dstack.state_path.read_bytes() if dstack.state_path.exists() else b""


def take_turn(probe: Probe) -> dict:
    """Request and receive the station's file; returns the params (with run and turn)."""
    probe.send("request", "request", {"station": probe.station})
    kind, params = probe.next()
    while kind == "go":  # the go that came before (it is what lets the station ask)
        kind, params = probe.next()
    assert kind == "params", params
    return params


def turn_of(params: dict) -> dict:
    return {"station": params["station"], "run": params["run"], "turn": params["turn"]}


def test_station_cannot_start_before_its_predecessor_is_done(running):
    s1, s2 = Probe(running, "s1"), Probe(running, "s2")
    try:
        s2.send("request", "request", {"station": "s2"})
        kind, body = s2.next()
        assert (kind, body["reason"]) == ("refused", "out_of_turn")
        assert not any(k == "params" for k, _ in s2.answers())
        params = take_turn(s1)
        # s1 has its file but is not done: s2 is still refused.
        before = state_bytes(running)
        s2.send("request", "request", {"station": "s2"})
        assert s2.next()[1]["reason"] == "out_of_turn"
        assert state_bytes(running) == before
        # A done without a pass is refused too; after pass + done, s2 gets go, then its file.
        s1.send("result", "done", turn_of(params))
        assert s1.next()[1]["reason"] == "not_passed"
        s1.send("result", "result", {**turn_of(params), "set": 0, "result": {"result": 100}})
        assert s1.next()[1]["verdict"] == "pass"
        s1.send("result", "done", turn_of(params))
        assert s1.next() == ("ack", {"station": "s1", "run": params["run"], "recorded": "done", "next": "s2"})
        assert s2.next() == ("go", {"station": "s2", "run": params["run"], "after": "s1"})
        assert take_turn(s2)["station"] == "s2"
    finally:
        s1.close()
        s2.close()


def test_results_for_another_stations_turn_are_refused(running):
    s1, s2 = Probe(running, "s1"), Probe(running, "s2")
    try:
        params = take_turn(s1)
        before = state_bytes(running)
        # s2, out of turn, sends a result carrying s1's turn token.
        s2.send("result", "result", {**turn_of(params), "station": "s2", "set": 0, "result": {"result": 100}})
        assert s2.next()[1]["reason"] == "out_of_turn"
        # s2 seals a result that names s1 (its own key, its own topic).
        s2.send("result", "result", {**turn_of(params), "set": 0, "result": {"result": 100}})
        assert s2.next()[1]["reason"] == "out_of_turn"
        # s1 with a made-up turn token, and s1 naming s2 in its payload.
        forged_turn = {**turn_of(params), "turn": "0" * 16}
        s1.send("result", "result", {**forged_turn, "set": 0, "result": {"result": 100}})
        assert s1.next()[1]["reason"] == "wrong_turn"
        s1.send("result", "result", {**turn_of(params), "station": "s2", "set": 0, "result": {"result": 100}})
        assert s1.next()[1]["reason"] == "wrong_station"
        assert state_bytes(running) == before
        # s1 finishes; then s1 (done) tries to answer for s2's turn.
        s1.send("result", "result", {**turn_of(params), "set": 0, "result": {"result": 100}})
        s1.next()
        s1.send("result", "done", turn_of(params))
        s1.next()
        p2 = take_turn(s2)
        before = state_bytes(running)
        s1.send("result", "result", {**turn_of(p2), "station": "s1", "set": 1, "result": {"result": 100}})
        assert s1.next()[1]["reason"] == "already_done"
        assert state_bytes(running) == before
    finally:
        s1.close()
        s2.close()


def tamper(probe: Probe, params: dict, how: str) -> tuple[bytes, str]:
    """An envelope on s1's result topic that must be rejected, and the reason expected."""
    body = {**turn_of(params), "set": 0, "result": {"result": 100}}  # a passing result, if it got through
    if how == "flipped_bit":
        data = bytearray(probe.seal("result", body))
        data[len(data) // 2] ^= 0x04
        return bytes(data), "bad_signature"
    if how == "wrong_signature":  # claims to be s1, signed with another key
        return probe.seal("result", body, signer="mallory"), "bad_signature"
    if how == "wrong_recipient":  # sealed for s2, not for the server
        return probe.seal("result", body, recipient="s2"), "wrong_recipient"
    if how == "old_timestamp":
        return probe.seal("result", body, now=time.time() - 600), "stale"
    if how == "malformed":
        return b"MSE1 not really an envelope", "malformed"
    raise AssertionError(how)


BAD = ["flipped_bit", "wrong_signature", "wrong_recipient", "old_timestamp", "malformed"]


def test_bad_envelopes_are_rejected_with_their_reason_and_change_nothing(running):
    # One stack for all five kinds (each stack costs seconds); each kind is checked on its own.
    s1 = Probe(running, "s1")
    try:
        params = take_turn(s1)
        before = state_bytes(running)
        for how in BAD:
            data, reason = tamper(s1, params, how)
            s1.publish("result", data)
            wait_until(lambda r=reason: running.rejected(r) == 1, 10, what=f"rejection {reason} ({how})")
            status = running.status(running.monitor)
            assert status["done"] == [] and status["attempts"] == {}, how
            assert status["run"] == params["run"]
            assert state_bytes(running) == before, how
            assert len(s1.sub.messages) == 1, how  # the params only: a rejected envelope gets no answer
        assert sum(running.rejected(r) for r in status["rejected"]) == len(BAD)
        # The line goes on unharmed: the real result is accepted.
        s1.send("result", "result", {**turn_of(params), "set": 0, "result": {"result": 100}})
        assert s1.next()[1]["verdict"] == "pass"
    finally:
        s1.close()


def test_replayed_envelope_is_rejected_and_changes_nothing(running):
    s2 = Probe(running, "s2")
    s1 = Probe(running, "s1")
    try:
        p1 = take_turn(s1)
        s1.send("result", "result", {**turn_of(p1), "set": 0, "result": {"result": 100}})
        s1.next()
        s1.send("result", "done", turn_of(p1))
        s1.next()
        p2 = take_turn(s2)
        # s2's first set fails: the genuine envelope counts one attempt...
        failing = s2.send("result", "result", {**turn_of(p2), "set": 0, "result": {"result": 130}})
        assert s2.next()[1]["verdict"] == "fail"
        before = state_bytes(running)
        # ...and its exact bytes sent again are a replay: no second attempt, no answer.
        s2.publish("result", failing)
        wait_until(lambda: running.rejected("replay") == 1, 10)
        assert state_bytes(running) == before
        assert running.status(running.monitor)["attempts"] == {"s1": 1, "s2": 1}
        assert len(s2.sub.messages) == s2.seen  # no answer to the replay
    finally:
        s1.close()
        s2.close()


def test_other_accounts_cannot_read_a_stations_file(running):
    """The ACL keeps station-s2 off s1's topics; the monitor, who may read them, sees only ciphertext."""
    s1 = Probe(running, "s1")
    spy = Subscriber(running.config, "station-s2", running.passwords["s2"])
    try:
        # The broker refuses the subscriptions themselves (failure SUBACK), not only their delivery.
        assert spy.subscribe("medsec/dispatch/station-s1/params")[0].is_failure
        assert spy.subscribe("medsec/dispatch/#")[0].is_failure
        assert spy.subscribe("$share/spies/medsec/dispatch/station-s1/params")[0].is_failure
        # Nor can s2 write on s1's request topic: the server never hears it.
        handled = running.status(running.monitor)["handled"]
        spy.client.publish("medsec/dispatch/station-s1/request", Probe.seal(s1, "request", {"station": "s1"}),
                           qos=1).wait_for_publish(5)
        seen_before = len(running.monitor.on("medsec/dispatch/station-s1/params"))
        params = take_turn(s1)
        assert params["recipe"] == "recipe-s1"
        wait_until(lambda: len(running.monitor.on("medsec/dispatch/station-s1/params")) > seen_before, 5)
        assert spy.messages == []
        assert running.status(running.monitor)["handled"] == handled + 1  # s1's own request only
        raw = running.monitor.on("medsec/dispatch/station-s1/params")[-1]
        assert b"recipe-s1" not in raw and b"value_sets" not in raw
        env = envelope.parse(raw)
        with pytest.raises(envelope.EnvelopeError) as err:
            envelope.decrypt(env, running.keys["s2"])  # any key but s1's
        assert err.value.reason == "undecryptable"
    finally:
        spy.close()
        s1.close()


def test_ten_megabyte_file_round_trips(running):
    blob = "x" * (10 * 1024 * 1024)
    files = {"s1": {"station": "s1", "value_sets": [{"setpoint": 100, "gain": 1.0}],
                    "accept": {"field": "result", "min": 95, "max": 105}, "firmware": blob}}
    running.write_line("ten-mb", files)
    s1 = Probe(running, "s1")
    try:
        started = time.monotonic()
        params = take_turn(s1)
        assert params["firmware"] == blob
        assert time.monotonic() - started < 10
    finally:
        s1.close()


def test_revoked_station_is_refused(running):
    from tests.dispatch.conftest import api

    s1 = Probe(running, "s1")
    try:
        take_turn(s1)
        assert s1.sub.client.is_connected()
        status, body = api(running.config, "DELETE", "/stations/s1")
        assert status == 200 and body["revoked_at"]
        assert "mqtt_password" not in body
        # Its live broker connection is closed by the revocation itself, not at some later reconnect.
        wait_until(lambda: not s1.sub.client.is_connected(), 5, what="station-s1 disconnected")
        before = state_bytes(running)
        # Its broker account is gone; even an envelope that got through would be refused.
        data = s1.seal("request", {"station": "s1"})
        mon = Subscriber(running.config, "dispatch")
        try:
            mon.client.publish("medsec/dispatch/station-s1/request", data, qos=1).wait_for_publish(5)
            wait_until(lambda: running.rejected("unknown_sender") == 1, 10)
        finally:
            mon.close()
        assert state_bytes(running) == before
        # The broker dropped the account: station-s1 can no longer log in.
        assert not can_login(running.config, "station-s1", running.passwords["s1"])
    finally:
        s1.close()


def can_login(config, account: str, password: str) -> bool:
    return connack(config, account, password) == "Success"


def test_a_broker_that_refuses_the_new_login_gets_a_clear_503(dstack, keys):
    """The key is stored and the login written for the broker's next start; the answer says so,
    names no password, and a later start of the broker would take it."""
    import json

    from services.broker.mosquitto import dynsec_path
    from services.common.state import load_passwords, write_secret
    from tests.dispatch.conftest import api

    passwords = load_passwords(dstack.config)
    passwords["brokeradmin"] = "not-the-broker-admin-password"
    write_secret(dstack.config.mqtt_passwords_path, json.dumps(passwords).encode())
    status, body = api(dstack.config, "POST", "/stations",
                       {"id": "s9", "public_key": envelope.public_pem(keys["s1"])})
    assert status == 503, body
    assert "'s9' is registered but the broker refused the brokeradmin login" in body["error"]
    station_password = load_passwords(dstack.config)["station-s9"]
    assert station_password not in json.dumps(body)
    assert api(dstack.config, "GET", "/stations/s9")[0] == 200
    assert "station-s9" in dynsec_path(dstack.config).read_text()
    assert not can_login(dstack.config, "station-s9", station_password)
