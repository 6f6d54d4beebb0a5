"""The key store's integrity on the use path: real keyadmin, auth and proxy processes on the real
broker; rows edited in the database file behind their back are refused at the next use."""
from __future__ import annotations

import base64
import sqlite3
import sys
import urllib.request

from services.common import v1, v2, v2device
from services.common.v2 import ReplayWindow
from services.stack.metrics import parse_prometheus
from tests.auth.wire import AuthClient
from tests.proxy.support import GOOD, Stack, closed_by_peer, connect, reading
from tests.support.broker import Subscriber
from tests.support.proc import wait_until
from tests.support.stack import api


def edit_database(config, *sqls: str) -> None:
    """What someone with write access to keys.db, but not to secrets/master.key, can do."""
    db = sqlite3.connect(config.keystore_path)
    for sql in sqls:
        db.execute(sql)
    db.commit()
    db.close()


def _stack(state, config_env, procs) -> Stack:
    monitor = Subscriber(state, "monitor")
    monitor.subscribe("medsec/#")
    stack = Stack(state, config_env, procs, procs.log_dir, monitor)
    stack.start_proxy()
    return stack


def test_an_unrevoked_device_stays_refused(state, config_env, keyadmin, auth_proc, procs):
    stack = _stack(state, config_env, procs)
    status, device = api(state, "POST", "/devices", {"id": "ward-1"})
    assert status == 201
    key, iv = device["key"], device["iv"]
    sock = connect(state.proxy_port)
    sock.sendall(reading(key, iv, 1))
    wait_until(lambda: stack.ingest("ward-1"), 5, what="the first reading")
    sock.close()
    assert api(state, "DELETE", "/devices/ward-1")[0] == 200
    # Un-revoke it in the file and stamp it changed, so the running auth reloads it at once.
    edit_database(state, "UPDATE devices SET revoked_at = NULL, changed = changed + 1000"
                         " WHERE id = 'ward-1'",
                  "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1000 AS TEXT)"
                  " WHERE name = 'changes'")
    for attempt in range(2):  # the running auth, then a restarted one (a full load)
        sock = connect(state.proxy_port)
        sock.sendall(reading(key, iv, 2))
        assert closed_by_peer(sock)
        sock.close()
        if attempt == 0:
            [auth] = [p for p in procs.started if p.args[-1] == "services.auth" and p.poll() is None]
            procs.stop(auth)
            procs.start("auth2", [sys.executable, "-m", "services.auth"], env=config_env)
            _wait_listening(procs, "auth2")
    assert len(stack.ingest("ward-1")) == 1  # nothing published after the revocation
    wait_until(lambda: "event=integrity_failed" in (procs.log_dir / "auth2.log").read_text(), 5,
               what="auth's integrity log line")
    shown = api(state, "GET", "/devices/ward-1")[1]
    assert shown["state"] == "integrity_failed" and shown["integrity"] == "failed"
    with urllib.request.urlopen(f"{state.admin_url}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert parse_prometheus(metrics)["medsec_keyadmin_integrity_failures_total"] >= 1
    assert 'medsec_keyadmin_devices{state="integrity_failed"} 1' in metrics
    stack.monitor.close()


def test_a_reset_v2_window_lets_no_frame_in_again(state, config_env, keyadmin, auth_proc, procs):
    status, device = api(state, "POST", "/devices", {"id": "ward-v2", "protocol": "v2"})
    assert status == 201
    keys = v2.derive_keys(bytes.fromhex(device["master_key"]), bytes.fromhex(device["key_id"]))

    def frame(seq: int) -> dict:
        raw = v2device.seal_reading(keys.cipher("d2g"), keys.common_iv, keys.kid, seq,
                                     v1.format_reading(GOOD))
        return {"id": seq, "op": "v2", "conn": 1, "src": "127.0.0.1:1",
                "frame": base64.b64encode(raw).decode()}

    client = AuthClient(state.auth_socket)
    for seq in (1, 2, 3):
        assert client.ask(frame(seq))["status"] == "ok"
    client.close()
    reset = ReplayWindow()
    reset.accept(1)
    edit_database(state, f"""UPDATE v2_windows SET "window" = '{reset.to_text()}'"""
                         f""" WHERE key_id = '{device["key_id"]}'""")
    procs.stop(auth_proc)  # a restarted auth loads the window from the store
    procs.start("auth2", [sys.executable, "-m", "services.auth"], env=config_env)
    _wait_listening(procs, "auth2")
    client = AuthClient(state.auth_socket)
    replayed = client.ask(frame(2))
    assert replayed["status"] == "rejected" and replayed["reason"] == "integrity_failed"
    assert client.ask(frame(4))["reason"] == "integrity_failed"  # nothing is accepted from it
    client.close()
    log = (procs.log_dir / "auth2.log").read_text()
    assert "event=integrity_failed" in log and "device=ward-v2" in log


def _wait_listening(procs, name: str) -> None:
    log = procs.log_dir / f"{name}.log"
    wait_until(lambda: log.exists() and "event=listening" in log.read_text(), 10, what=f"{name} to listen")
