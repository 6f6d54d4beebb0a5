"""Done when 1 (a line of 3 runs to completion) and the restart case, against a real broker."""
from __future__ import annotations

import json
import threading

from services.dispatch.station import StationClient
from tests.dispatch.conftest import STATIONS, demo_files
from tests.support.broker import Subscriber
from tests.support.proc import wait_until


def run_stations(dstack, stations, results, log):
    threads = []
    for s in stations:
        client = StationClient(dstack.config, s, dstack.keys[s], dstack.keys["dispatch"].public_key(),
                               dstack.passwords[s], say=log.append)

        def play(c=client, name=s):
            try:
                results[name] = c.run(timeout=30)
            except Exception as exc:  # reported by the assertion below
                results[name] = exc
        t = threading.Thread(target=play, daemon=True)
        t.start()
        threads.append(t)
    return threads


def test_line_of_three_runs_in_order_with_a_retry(dstack, request):
    dstack.write_line(request.node.name, demo_files())
    for s in STATIONS:
        dstack.register(s)
    monitor = Subscriber(dstack.config, "monitor")
    monitor.subscribe("medsec/dispatch/#")
    dstack.start_dispatch()
    wait_until(lambda: dstack.status(monitor), 15, what="dispatch status")
    results, log = {}, []
    # All three start at once: s2 and s3 must wait for their predecessor's done.
    for t in run_stations(dstack, reversed(STATIONS), results, log):
        t.join(40)
    try:
        for s in STATIONS:
            assert not isinstance(results[s], Exception), results[s]
            assert results[s].passed
        assert results["s2"].attempts == 2 and results["s2"].passed_set == 1
        assert results["s1"].attempts == 1 and results["s3"].attempts == 1
        assert [results[s].next_station for s in STATIONS] == ["s2", "s3", None]
        # s2 and s3 asked before their turn and were refused, then started on go.
        assert "out_of_turn" in results["s3"].refusals
        status = wait_until(lambda: dstack.status(monitor).get("complete") and dstack.status(monitor), 5)
        assert status["done"] == ["s1", "s2", "s3"]
        assert status["attempts"] == {"s1": 1, "s2": 2, "s3": 1}
        state = json.loads(dstack.state_path.read_text())
        assert state["done"] == ["s1", "s2", "s3"] and state["position"] == 3
        # Every station got its own file (on its own topic), and go went to s2 then s3, in that order.
        topics = [m.topic for m in monitor.messages]
        for s in STATIONS:
            assert f"medsec/dispatch/station-{s}/params" in topics
        gos = [t for t in topics if t.endswith("/go")]
        assert gos == ["medsec/dispatch/station-s2/go", "medsec/dispatch/station-s3/go"]
        # The file's content never crossed the broker in the clear.
        assert not any(b"recipe-" in m.payload for m in monitor.messages if "status" not in m.topic)
        assert any("[s2] verdict: fail" in line for line in log)
    finally:
        monitor.close()


def test_restart_keeps_the_line_progress(dstack, procs, request):
    dstack.write_line(request.node.name, demo_files(fail_first=()))
    for s in STATIONS:
        dstack.register(s)
    monitor = Subscriber(dstack.config, "monitor")
    monitor.subscribe("medsec/dispatch/status")
    proc = dstack.start_dispatch()
    wait_until(lambda: dstack.status(monitor), 15, what="dispatch status")
    results, log = {}, []
    for t in run_stations(dstack, ["s1"], results, log):
        t.join(30)
    assert results["s1"].passed
    procs.stop(proc)
    assert proc.returncode == 0  # SIGTERM drains and exits cleanly
    dstack.start_dispatch()
    results = {}
    for t in run_stations(dstack, ["s2", "s3"], results, log):
        t.join(30)
    try:
        assert results["s2"].passed and results["s3"].passed, results
        state = json.loads(dstack.state_path.read_text())
        assert state["done"] == ["s1", "s2", "s3"]
    finally:
        monitor.close()
