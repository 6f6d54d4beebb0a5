"""The real history process on a real Mosquitto: everything published is stored once, whatever restarts."""
from __future__ import annotations

import os
import signal
import time

from services.history.store import open_history
from tests.history.support import payload, start_history
from tests.support.broker import Subscriber, start_mosquitto
from tests.support.proc import wait_until


def stored(config, device: str) -> list:
    store = open_history(config, readonly=True)
    try:
        return store.readings(device, 0, 2e9, 10000)
    finally:
        store.close()


def total(config, devices) -> int:
    if not config.history_path.exists():
        return 0
    return sum(len(stored(config, d)) for d in devices)


def publish(config, items) -> None:
    pub = Subscriber(config, "publisher")
    try:
        for topic, body in items:
            pub.client.publish(topic, body, qos=1).wait_for_publish(10)
    finally:
        pub.close()


def test_every_reading_once_across_a_kill_and_a_broker_restart(config, broker, procs, config_env, tmp_path):
    devices = [f"hist-{i}" for i in range(5)]
    sent = {d: [] for d in devices}
    items = []
    now = time.time()  # recent: older readings would be pruned by the 7-day retention
    for n in range(300):
        d = devices[n % 5]
        ts, seq = now - 60 + n * 0.01, (n if n % 2 else None)  # v2 and v1 readings
        sent[d].append((ts, seq))
        items.append((f"Pico/{d}/json", payload(d, ts, seq)))
    logs = tmp_path / "proclogs"
    hist = start_history(procs, config_env, logs)
    publish(config, items[:100])
    os.kill(hist.pid, signal.SIGKILL)  # mid-stream: some taken and not yet stored or acknowledged
    hist.wait(10)
    publish(config, items[100:200])  # while it is down: kept in its persistent session
    procs.stop(broker)  # the broker restarts with the session queue (persistence)
    broker = start_mosquitto(config, procs)
    start_history(procs, config_env, logs, name="history")
    publish(config, items[200:])
    wait_until(lambda: total(config, devices) >= 300, 30, what="all 300 readings stored")
    for d in devices:
        got = [(r.ts, r.seq) for r in stored(config, d)]
        assert got == sorted(sent[d])


def test_bad_messages_are_logged_and_skipped(config, broker, procs, config_env, tmp_path):
    logs = tmp_path / "proclogs"
    hist = start_history(procs, config_env, logs)
    now = time.time()
    bad = [
        ("Pico/b1/json", b"not json"),
        ("Pico/b1/json", b"[1,2]"),
        ("Pico/b1/json", payload("other", 1.0, 1)),  # names another device
        ("Pico/b1/json", payload("b1", -1.0, 1)),
        ("Pico/b1/json", payload("b1", 1.0, -5)),
        ("Pico/b1/json", payload("b1", 1.0, 1, (99.0, 31.2, 1.65, 0.01, -0.02, 0.98, 30.5))),
        ("Pico/b1/json", payload("b1", 1.0, 1).replace(b'"Temp":36.6', b'"Temp":"36.6"')),
        ("Pico/b1/json", payload("b1", 1.0, 1).replace(b',"TempMpu":30.5', b"")),
        ("Pico/b1/json", b"{" * 5000),
    ]
    publish(config, bad + [("Pico/b1/json", payload("b1", now, 7))])
    wait_until(lambda: total(config, ["b1"]) == 1, 20, what="the good reading")
    text = (logs / "history.log").read_text()
    for reason in ("not_json", "device_mismatch", "bad_ts", "bad_seq", "out_of_range", "not_numeric",
                   "missing_field", "too_long"):
        assert f"reason={reason}" in text, reason
    assert "Traceback" not in text
    assert [(r.ts, r.seq) for r in stored(config, "b1")] == [(now, 7)]
    assert hist.poll() is None


def test_sigterm_drains_and_exits_0(config, broker, procs, config_env, tmp_path):
    logs = tmp_path / "proclogs"
    hist = start_history(procs, config_env, logs)
    publish(config, [("Pico/t1/json", payload("t1", time.time() + i, i)) for i in range(50)])
    procs.stop(hist)
    assert hist.returncode == 0
    text = (logs / "history.log").read_text()
    assert "event=stopped" in text and "Traceback" not in text
    start_history(procs, config_env, logs)  # whatever the drain did not store comes back
    wait_until(lambda: total(config, ["t1"]) == 50, 20, what="50 readings")
    metrics = (config.run_dir / "metrics-history.prom").read_text()
    assert "medsec_history_stored_total" in metrics


def test_without_its_broker_account_it_says_so(config, procs, config_env, tmp_path):
    hist = procs.start("history", [os.sys.executable, "-m", "services.history"], env=config_env)
    assert hist.wait(30) == 1
    assert "startup_failed" in (tmp_path / "proclogs" / "history.log").read_text()


def test_supervisord_runs_the_history_service(config, tmp_path):
    from services.stack.programs import programs

    progs = {p.name: p for p in programs(config, tmp_path / "broker.conf", nodered=False)}
    assert progs["history"].argv[1:] == ["-m", "services.history"]
    assert progs["history"].priority > progs["mosquitto"].priority


def test_the_service_on_postgresql(config, broker, procs, config_env, tmp_path, pg_server):
    import dataclasses

    pg = dataclasses.replace(config, history_url=pg_server.schema_url())
    env = {**config_env, **pg.to_env()}
    hist = start_history(procs, env, tmp_path / "proclogs")
    now = time.time()
    publish(config, [("Pico/pg1/json", payload("pg1", now + i, i)) for i in range(30)])
    os.kill(hist.pid, signal.SIGKILL)
    hist.wait(10)
    publish(config, [("Pico/pg1/json", payload("pg1", now + i, i)) for i in range(30, 60)])
    start_history(procs, env, tmp_path / "proclogs")

    def rows() -> list:
        store = open_history(pg, readonly=True)
        try:
            return store.readings("pg1", 0, 2e9, 1000)
        finally:
            store.close()

    wait_until(lambda: len(rows()) >= 60, 20, what="60 readings in PostgreSQL")
    assert [r.seq for r in rows()] == list(range(60))
    assert not config.history_path.exists(), "nothing went to SQLite"
