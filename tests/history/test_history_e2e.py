"""Issue 17, "Done when": 10 v2 devices stream for a minute through the real processes (auth, proxy,
publisher, history, keyadmin, Mosquitto) while the history service is killed (SIGKILL) and the
broker restarts. Every reading published on Pico/<id>/json (seen by a separate subscriber) is in
history exactly once; the API returns them by range as JSON and CSV; the per-minute aggregates
match the raw rows; retention drops injected old rows; the FHIR export validates.
"""
from __future__ import annotations

import asyncio
import csv
import io
import json
import signal
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from urllib.parse import urlencode

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from services.common.state import mqtt_password, service_token
from services.common.v1 import FIELDS
from services.history.readings import Row
from services.history.store import DAY, open_history
from services.sim.runner import SimOptions, Simulation
from services.sim.v2 import V2Device, seq_counter
from tests.history.support import start_history
from tests.support.broker import start_mosquitto
from tests.support.proc import wait_until
from tests.support.stores import add_v2_devices

DEVICES = 10
RATE = 4.0
STREAM = 60.0


class Collector:
    """A separate subscriber with a persistent session: every publication of Pico/+/json, counted."""

    def __init__(self, config) -> None:
        self.lock = threading.Lock()
        self.seen: dict[tuple[str, float, int | None], dict] = {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"coll-{uuid.uuid4().hex[:8]}",
                                  clean_session=False, protocol=mqtt.MQTTv311)
        self.client.username_pw_set("dashboard", mqtt_password(config, "dashboard"))
        self.client.reconnect_delay_set(0.05, 0.5)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("Pico/+/json", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(config.host, config.mqtt_port)
        self.client.loop_start()
        wait_until(self.subscribed.is_set, 10, what="collector subscription")

    def _on_message(self, client, userdata, msg) -> None:
        body = json.loads(msg.payload)
        with self.lock:
            self.seen[(body["device"], body["ts"], body["seq"])] = body

    def snapshot(self) -> dict:
        with self.lock:
            return dict(self.seen)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def more(collector: Collector, n: int, what: str, timeout: float = 30) -> None:
    seen = len(collector.snapshot())
    wait_until(lambda: len(collector.snapshot()) >= seen + n, timeout, what=what)


def start(procs, name: str, env: dict[str, str], tmp_path, ready: str):
    proc = procs.start(name, [sys.executable, "-m", f"services.{name}"], env=env)
    log = tmp_path / "proclogs" / f"{name}.log"
    wait_until(lambda: log.exists() and ready in log.read_text(), 15, what=f"{name}: {ready}")
    return proc


def http(config, path: str, **params) -> tuple[str, bytes, dict]:
    """GET on the real key-admin API with Node-RED's read-scope token: (content type, body, headers)."""
    url = f"{config.admin_url}{path}?{urlencode(params)}"
    token = service_token(config, "nodered-read")
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as answer:
        return answer.headers.get_content_type(), answer.read(), dict(answer.headers)


def api_rows(config, device: str, start: float, end: float, fmt: str = "json") -> list[tuple]:
    out, cursor = [], None
    while True:
        params = {"from": start, "to": end, "limit": 250, "format": fmt}
        if cursor:
            params["cursor"] = cursor
        ctype, body, headers = http(config, f"/devices/{device}/readings", **params)
        if fmt == "json":
            doc = json.loads(body)
            out += [(device, i["ts"], i["seq"], tuple(i[f] for f in FIELDS)) for i in doc["items"]]
            cursor = doc["next"]
        else:
            assert ctype == "text/csv"
            for line in csv.DictReader(io.StringIO(body.decode())):
                out.append((device, float(line["ts"]), int(line["seq"]) if line["seq"] else None,
                            tuple(float(line[f]) for f in FIELDS)))
            cursor = headers.get("X-Next-Cursor")
        if not cursor:
            return out


@pytest.mark.timeout(400)
def test_history_keeps_every_published_reading_once(config, config_env, procs, broker, keyadmin, tmp_path):
    env = {**config_env, "MEDSEC_BUS_TIMEOUT": "1.5"}
    creds = add_v2_devices(config, f"h{uuid.uuid4().hex[:6]}", DEVICES)
    ids = [c.id for c in creds]
    procs.start("auth", [sys.executable, "-m", "services.auth"], env=env)
    wait_until(lambda: config.auth_socket.exists(), 10, what="auth socket")
    proxy = start(procs, "proxy", env, tmp_path, "event=bus_subscribed")
    start(procs, "publisher", env, tmp_path, "bus_subscribed")
    logs = tmp_path / "proclogs"
    history = start_history(procs, env, logs)
    collector = Collector(config)

    devices = [V2Device(c, counter=seq_counter(None)) for c in creds]
    options = SimOptions(port=config.proxy_port, rate=RATE, min_backoff=0.05, max_backoff=0.5)
    sim = Simulation(devices, options)
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=lambda: loop.run_until_complete(sim.run()), daemon=True)
    t0 = time.time()
    runner.start()
    try:
        wait_until(lambda: len(collector.snapshot()) >= DEVICES * 20, 30, what="readings flowing")
        procs.stop(history, signal.SIGKILL)  # kill -9 mid-stream
        more(collector, DEVICES * 20, "readings while it is down")
        start_history(procs, env, logs)
        more(collector, DEVICES * 10, "readings after the history restart")
        procs.stop(broker)  # the broker restarts mid-stream, with the persistent sessions
        broker = start_mosquitto(config, procs)
        more(collector, DEVICES * 10, "readings after the broker restart", timeout=60)
        wait_until(lambda: time.time() - t0 >= STREAM, STREAM + 5, interval=0.5, what="a minute of streaming")
    finally:
        loop.call_soon_threadsafe(sim.stop)
        runner.join(15)
        procs.stop(proxy)
    published = collector.snapshot()
    assert len(published) >= DEVICES * RATE * 30

    def stored() -> list[Row]:
        h = open_history(config, readonly=True)
        try:
            return [r for d in ids for r in h.readings(d, 0, 2e9, 10000)]
        finally:
            h.close()

    wait_until(lambda: len(stored()) >= len(published), 30, what="history to hold every published reading")
    rows = stored()
    keys = [(r.device, r.ts, r.seq) for r in rows]
    assert len(keys) == len(set(keys)), "a reading stored twice"
    assert set(keys) == set(published), "history differs from what was published"
    for r in rows:
        assert r.values == tuple(float(published[(r.device, r.ts, r.seq)][f]) for f in FIELDS)

    # The API by range, JSON and CSV, paged; a range in the middle returns exactly its rows.
    lo, hi = t0 + 20, t0 + 40
    for device in ids[:3]:
        mine = sorted((r.device, r.ts, r.seq, r.values) for r in rows if r.device == device)
        assert api_rows(config, device, 0, time.time() + 10) == mine
        assert api_rows(config, device, 0, time.time() + 10, "csv") == mine
        assert api_rows(config, device, lo, hi) == [m for m in mine if lo <= m[1] < hi]

    # Per-minute aggregates match the raw rows.
    for device in ids[:3]:
        doc = json.loads(http(config, f"/devices/{device}/readings", step="1m", **{"from": 0, "to": 2e9})[1])
        mine = [r for r in rows if r.device == device]
        assert sum(m["n"] for m in doc["items"]) == len(mine)
        for m in doc["items"]:
            members = [r for r in mine if m["ts"] <= r.ts < m["ts"] + 60]
            assert m["n"] == len(members)
            for k, name in enumerate(FIELDS):
                col = [r.values[k] for r in members]
                assert m[f"{name}_min"] == min(col) and m[f"{name}_max"] == max(col)
                assert m[name] == pytest.approx(statistics.fmean(col))

    # FHIR export of one device validates, one temperature Observation per reading.
    bundle_mod = pytest.importorskip("fhir.resources.R4B.bundle")
    doc = json.loads(http(config, f"/devices/{ids[0]}/fhir", limit=2000, **{"from": 0, "to": 2e9})[1])
    bundle_mod.Bundle.model_validate(doc)
    temps = [e for e in doc["entry"] if e["resource"]["resourceType"] == "Observation"
             and e["resource"]["code"]["coding"][0]["code"] == "8310-5"]
    assert len(temps) == len([r for r in rows if r.device == ids[0]])

    # Retention: rows older than 7 days (injected through the store) go at the service's next prune
    # (it prunes at start); the minute aggregates of 8 days ago stay (1 year).
    old = [Row(ids[0], time.time() - 8 * DAY + i, 10_000 + i, "v2", rows[0].values) for i in range(5)]
    writer = open_history(config)
    try:
        assert writer.add(old) == 5
    finally:
        writer.close()
    assert len(api_rows(config, ids[0], 0, time.time() - 7 * DAY)) == 5
    procs.stop(_last_history(procs))
    start_history(procs, env, logs)
    wait_until(lambda: not api_rows(config, ids[0], 0, time.time() - 7 * DAY), 20, what="old rows pruned")
    doc = json.loads(http(config, f"/devices/{ids[0]}/readings", step="1m",
                          **{"from": 0, "to": time.time() - 7 * DAY})[1])
    assert sum(m["n"] for m in doc["items"]) == 5
    assert "Traceback" not in (logs / "history.log").read_text()
    collector.close()


def _last_history(procs):
    return [p for p in procs.started if p.args[-1] == "services.history" and p.poll() is None][-1]
