"""Issue 14 item 1 against real processes: keyadmin (waitress), auth, proxy, Mosquitto.

Two credentials sharing the key and the IV's first 9 bytes cannot both be registered; a store
that already holds such a pair (written here with the store's check bypassed, as a store from
before the check holds it) is reported at start, a reading that decodes under both is refused
(`ambiguous_key`, nothing published) and one that decodes under exactly one is served as it.
"""
from __future__ import annotations

import json
import sys
import urllib.request

from services.common import v1
from services.keystore.backends import open_store
from services.keystore.credentials import make_secret
from services.keystore.models import NewDevice
from tests.auth.wire import encrypt
from tests.proxy.support import closed_by_peer, connect
from tests.support.broker import Subscriber
from tests.support.proc import port_open, wait_until
from tests.support.stack import api

KEY, IV = "Key-0123456789ab", "IV-0123456789abc"
READING = dict.fromkeys(v1.FIELDS, 1.0) | {"Temp": 36.6, "TempMcu": 30.0, "TempMpu": 30.0}


def with_tail(iv: str, pos: int) -> str:
    raw = bytearray(iv.encode())
    raw[pos] ^= 1
    return raw.decode()


def test_registering_a_clashing_credential_is_refused(state, keyadmin):
    status, body = api(state, "POST", "/devices", {"id": "first", "key": KEY, "iv": IV})
    assert status == 201, body
    for iv in (IV, with_tail(IV, 12), with_tail(IV, 15)):
        status, body = api(state, "POST", "/devices", {"id": "second", "key": KEY, "iv": iv})
        assert status == 409 and "clashes with device first " in body["error"], body
        assert KEY not in json.dumps(body) and IV[:9] not in json.dumps(body)
    assert api(state, "DELETE", "/devices/first")[0] == 200
    status, body = api(state, "POST", "/devices", {"id": "second", "key": KEY, "iv": with_tail(IV, 10)})
    assert status == 409 and "clashes with device first (revoked credentials)" in body["error"], body
    status, body = api(state, "POST", "/devices", {"id": "second", "key": KEY, "iv": IV[:8] + "~" + IV[9:]})
    assert status == 201, body


def start(procs, state, config_env) -> None:
    auth = procs.start("auth", [sys.executable, "-m", "services.auth"], env=config_env)
    wait_until(lambda: state.auth_socket.exists() or auth.poll() is not None, 10, what="auth socket")
    keyadmin = procs.start("keyadmin", [sys.executable, "-m", "services.keyadmin"], env=config_env)
    wait_until(lambda: port_open(state.admin_port) or keyadmin.poll() is not None, 15, what="keyadmin")
    procs.start("proxy", [sys.executable, "-m", "services.proxy"], env=config_env)
    log = procs.log_dir / "proxy.log"
    # "subscribed" (its bus subscription to key events; the event's name varies: a substring).
    wait_until(lambda: "event=listening" in (text := log.read_text()) and "subscribed" in text, 10,
               what="the proxy to listen and follow key events")
    assert auth.poll() is None and keyadmin.poll() is None


def clash_lines(procs, name: str) -> list[str]:
    return sorted(ln.split("devices=")[1].split()[0] for ln in (procs.log_dir / f"{name}.log").read_text()
                  .splitlines() if "event=credential_clash" in ln)


def test_an_existing_clash_is_reported_and_never_resolved_by_a_pick(state, broker, config_env, procs,
                                                                     monkeypatch):
    store = open_store(state)
    monkeypatch.setattr(store, "_check_clash", lambda *args: None)
    # a, b: their IVs differ at byte 10 only: a's readings (chained) decode under b too, with
    # Temp's second digit changed, so no reading of theirs can be attributed.
    store.add(NewDevice("a", "v1", {"key": KEY, "iv": IV}))
    store.add(NewDevice("b", "v1", {"key": KEY, "iv": with_tail(IV, 10)}))
    # p, q: their IVs differ at byte 15 (the quote closing Temp's value): each one's readings
    # decode under its own credential only.
    other = make_secret("v1")
    store.add(NewDevice("p", "v1", other))
    store.add(NewDevice("q", "v1", {"key": other["key"], "iv": with_tail(other["iv"], 15)}))
    store.close()
    monitor = Subscriber(state, "monitor")
    monitor.subscribe("medsec/#")
    start(procs, state, config_env)
    try:
        assert clash_lines(procs, "auth") == ["a,b", "p,q"]
        assert clash_lines(procs, "keyadmin") == ["a,b", "p,q"]
        status, audit = api(state, "GET", "/audit")
        assert status == 200 and [e["action"] for e in audit["entries"]].count("credential_clash") == 1
        with connect(state.proxy_port) as sock:
            sock.sendall(encrypt(KEY, IV, v1.format_reading(READING)))
            assert closed_by_peer(sock)
        rejected = wait_until(lambda: [json.loads(p) for p in monitor.on("medsec/events/~unidentified")], 5,
                              what="the rejected event")
        assert [(e["event"], e["reason"]) for e in rejected] == [("rejected", "ambiguous_key")]
        # Exactly one credential decodes each of these: served as that device, values exact.
        for device, iv in (("p", other["iv"]), ("q", with_tail(other["iv"], 15))):
            topic = f"medsec/ingest/{device}"
            for n, variant in enumerate(v1.VARIANTS, 1):
                with connect(state.proxy_port) as sock:
                    sock.sendall(encrypt(other["key"], iv, v1.format_reading(READING), variant))
                    got = wait_until(lambda t=topic, n=n: len(monitor.on(t)) == n and monitor.on(t), 5,
                                     what=f"{device}'s reading")
            assert [json.loads(g)["values"] for g in got] == [
                {k: f"{v:.3f}" for k, v in READING.items()}] * 2
        batched = [r for p in monitor.on("medsec/ingest/~batch") for r in json.loads(p)]
        assert not monitor.on("medsec/ingest/a") and not monitor.on("medsec/ingest/b")
        assert not [r for r in batched if r["device"] in ("a", "b")]
        logs = "".join(p.read_text() for p in procs.log_dir.glob("*.log"))
        assert "reason=ambiguous_key" in logs and "Traceback" not in logs
        assert KEY not in logs and other["key"] not in logs
        with urllib.request.urlopen(state.admin_url + "/metrics", timeout=10) as resp:
            assert "medsec_keyadmin_credential_clashes 2" in resp.read().decode()
    finally:
        monitor.close()
