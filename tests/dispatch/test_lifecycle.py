"""The dispatch server as a process: SIGTERM, no message dropped, replays after a restart.

Real Mosquitto, real key-admin, `python -m services.dispatch` started and stopped by pid.
"""
from __future__ import annotations

import json
import os
import signal

import pytest

from services.common import envelope
from services.dispatch import keys as dkeys
from services.dispatch.nonces import StoredNonceCache
from tests.dispatch.conftest import STATIONS, Probe, demo_files
from tests.support.broker import Subscriber
from tests.support.proc import wait_until


@pytest.fixture
def line(dstack, request):
    """dstack with a line s1..s3 registered, a monitor on the dispatch tree and the server running."""
    dstack.write_line(request.node.name, demo_files())
    for s in STATIONS:
        dstack.register(s)
    dstack.monitor = Subscriber(dstack.config, "monitor")
    dstack.monitor.subscribe("medsec/dispatch/#")
    dstack.start_dispatch()
    wait_until(lambda: dstack.status(dstack.monitor), 15, what="dispatch status")
    yield dstack
    dstack.monitor.close()


def restart(dstack) -> None:
    dstack.procs.stop(dstack.dispatch)  # SIGTERM
    assert dstack.dispatch.returncode == 0
    handled = dstack.status(dstack.monitor).get("ts")
    dstack.start_dispatch()
    wait_until(lambda: dstack.status(dstack.monitor).get("ts") != handled, 15, what="the new server's status")


def test_sigterm_drains_and_exits_zero(line):
    log = line.procs.log_dir / "dispatch.log"
    line.procs.stop(line.dispatch, signal.SIGTERM)
    assert line.dispatch.returncode == 0
    assert "event=stopped" in log.read_text()


def test_a_burst_the_server_cannot_keep_up_with_is_handled_whole(line):
    """More messages than the old in-process queue held (1000), sent while the server is frozen:
    each one reaches the service (here: each is rejected for its forged signature), none is dropped."""
    probe = Probe(line, "s1")
    try:
        forged = probe.seal("request", {"station": "s1"}, signer="s2")  # s2's key on s1's envelope
        before = line.status(line.monitor).get("rejected", {}).get("bad_signature", 0)
        total = 1200
        os.kill(line.dispatch.pid, signal.SIGSTOP)
        try:
            infos = [probe.sub.client.publish("medsec/dispatch/station-s1/request", forged, qos=1)
                     for _ in range(total)]
            for info in infos:
                info.wait_for_publish(30)
        finally:
            os.kill(line.dispatch.pid, signal.SIGCONT)
        wait_until(lambda: line.status(line.monitor).get("rejected", {}).get("bad_signature", 0)
                   >= before + total, 120, what=f"all {total} messages handled")
        assert line.status(line.monitor)["rejected"]["bad_signature"] == before + total
        assert line.dispatch.poll() is None
    finally:
        probe.close()


def served_then_replayed(line, restart_server, after_refusal=lambda: None) -> None:
    """s1's request is served; restart_server() restarts dispatch; the same bytes sent again are
    refused as a replay (counted once), after_refusal() checks what else it must not have changed,
    and a fresh envelope from s1 is still served."""
    probe = Probe(line, "s1")
    try:
        request = probe.send("request", "request", {"station": "s1"})
        assert probe.next()[0] == "params"
        restart_server()
        probe.publish("request", request)  # the same bytes, well inside the window
        wait_until(lambda: line.status(line.monitor).get("rejected", {}).get("replay", 0) == 1, 15,
                   what="the replay to be refused")
        after_refusal()
        probe.send("request", "request", {"station": "s1"})
        assert probe.next()[0] == "params"
    finally:
        probe.close()


def test_a_replay_after_a_restart_of_the_server_is_refused(line):
    state = []

    def restart_server() -> None:
        state.append(line.state_path.read_bytes())
        restart(line)

    def state_unchanged() -> None:
        assert line.state_path.read_bytes() == state[0]

    served_then_replayed(line, restart_server, state_unchanged)


def test_an_unreadable_cache_refuses_everything_sealed_before_the_restart(line):
    def restart_with_a_torn_cache() -> None:
        line.procs.stop(line.dispatch)
        (dkeys.dispatch_dir(line.config) / "nonces.json").write_text("{ torn")
        line.start_dispatch()
        wait_until(lambda: "nonce_cache_unreadable" in (line.procs.log_dir / "dispatch.log").read_text(), 15,
                   what="the server to report the cache")

    served_then_replayed(line, restart_with_a_torn_cache)


def test_a_station_that_restarts_still_refuses_a_replayed_answer(tmp_path, keys):
    """The station's cache (what `medsec station run` holds) read back by a new process's cache."""
    path = tmp_path / "stations" / "s1" / "nonces.json"
    data = envelope.seal(b'{"kind": "params"}', kind="params", sender="dispatch", recipient="s1",
                         sender_key=keys["dispatch"], recipient_key=keys["s1"].public_key())

    def opener() -> envelope.Opener:
        return envelope.Opener("s1", keys["s1"], lambda s: keys["dispatch"].public_key() if s == "dispatch"
                               else None, nonces=StoredNonceCache(path))

    opener().open(data)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(envelope.EnvelopeError) as refused:
        opener().open(data)  # a new holder, as after a restart
    assert refused.value.reason == "replay"


def test_the_stored_cache_is_pruned_to_the_window_and_bounded(tmp_path, keys):
    now = [1_000_000.0]
    path = tmp_path / "nonces.json"
    cache = StoredNonceCache(path, window=60, clock=lambda: now[0])
    for n in range(50):
        cache.check_and_add("s1", n.to_bytes(16, "big"), int(now[0] * 1000) + n, now[0])
    assert len(json.loads(path.read_text())["seen"]["s1"]) == 50
    now[0] += 120  # two windows later: everything stored is stale, and stale envelopes are refused anyway
    cache.check_and_add("s1", b"\xff" * 16, int(now[0] * 1000), now[0])
    assert len(json.loads(path.read_text())["seen"]["s1"]) == 1
    again = StoredNonceCache(path, window=60, clock=lambda: now[0])
    with pytest.raises(envelope.EnvelopeError, match="replay"):
        again.check_and_add("s1", b"\xff" * 16, int(now[0] * 1000), now[0])


def test_a_cache_that_cannot_be_written_refuses_the_envelope(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    cache = StoredNonceCache(blocker / "nonces.json", window=60, clock=lambda: 1000.0)
    with pytest.raises(envelope.EnvelopeError) as refused:
        cache.check_and_add("s1", b"\x01" * 16, 1_000_500, 1000.5)  # stamped after the (failed) load
    assert refused.value.reason == "nonce_cache_unwritable"
