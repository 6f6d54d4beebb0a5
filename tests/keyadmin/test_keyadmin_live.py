"""The key-admin API as it runs in production: its own process (waitress), the real broker, the real auth."""
from __future__ import annotations

import json
import os
import signal
import sys

from tests.auth.wire import AuthClient, encrypt
from tests.support.broker import Subscriber
from tests.support.proc import wait_until
from tests.support.stack import api

GOOD = '{"Temp":"36.600","TempMcu":"23.700","PulseSig":"2.123","Acel_x":"0.000","Acel_y":"0.000",' \
       '"Acel_z":"0.000","TempMpu":"23.400"}'


def test_api_events_and_auth_end_to_end(state, keyadmin, auth_proc, procs):
    sub = Subscriber(state, "monitor")
    sub.subscribe("medsec/keys/events")
    status, device = api(state, "POST", "/devices", {"id": "live-1"})
    assert status == 201
    # A device added through the API is identified by the running auth service at once.
    client = AuthClient(state.auth_socket)
    answer = client.reading(1, encrypt(device["key"], device["iv"], GOOD))
    assert (answer["status"], answer["device"]) == ("ok", "live-1")
    assert api(state, "DELETE", "/devices/live-1")[0] == 200
    assert client.reading(1, encrypt(device["key"], device["iv"], GOOD))["reason"] == "revoked"
    events = wait_until(lambda: len(sub.on("medsec/keys/events")) >= 2 and sub.on("medsec/keys/events"), 10,
                        what="key events")
    decoded = [json.loads(p) for p in events]
    assert [(e["event"], e["device"]) for e in decoded] == [("added", "live-1"), ("revoked", "live-1")]
    assert all(isinstance(e["ts"], float) and set(e) == {"event", "device", "ts"} for e in decoded)
    # Counters reach the API within a flush interval.
    shown = wait_until(lambda: (d := api(state, "GET", "/devices/live-1")[1])["readings"] == 1 and d, 5,
                       what="counters in the API")
    assert shown["last_seen"] and device["key"] not in json.dumps(shown)
    client.close()
    sub.close()
    # No log line carries the key.
    logs = "".join(p.read_text() for p in procs.log_dir.glob("*.log"))
    assert device["key"] not in logs and device["iv"] not in logs


def test_wrong_token_401_and_sigterm(state, keyadmin, procs):
    status, body = api(state, "GET", "/devices", token="nope")
    assert (status, body) == (401, {"error": "unknown or revoked token"})
    log = procs.log_dir / "keyadmin.log"
    wait_until(lambda: "WARNING" in log.read_text() and "status=401" in log.read_text(), 5,
               what="a log line for the refused request")
    assert "nope" not in log.read_text()
    keyadmin.send_signal(signal.SIGTERM)
    assert keyadmin.wait(10) == 0


def test_refuses_to_start_with_a_wide_key_store(state, config_env, procs):
    from services.keystore.sqlite import SQLiteKeyStore

    SQLiteKeyStore.open(state).close()
    os.chmod(state.keystore_path, 0o644)
    proc = procs.start("keyadmin", [sys.executable, "-m", "services.keyadmin"], env=config_env)
    assert proc.wait(15) == 1
    log = (procs.log_dir / "keyadmin.log").read_text()
    assert "0600" in log and "Traceback" not in log
