"""Legacy replay and floods through the real proxy, auth, publisher and broker (issue 14, item 3).

v1 has no freshness: the proxy drops byte-identical readings within MEDSEC_REPLAY_WINDOW, limits
each device to MEDSEC_DEVICE_MAX_RATE readings/s (burst MEDSEC_DEVICE_BURST) over all its
connections, reports a device on two connections at once (duplicate_session, an alert on
Pico/<id>/alert), and closes a connection after MEDSEC_MAX_DUPLICATES replays or v2 duplicates.
"""
from __future__ import annotations

import json
import socket
import time
import uuid

from tests.proxy.support import Reconnector, Streamer, closed_by_peer, connect, reading
from tests.proxy.test_v2 import read_acks, register_v2, session
from tests.proxy.test_v2 import reading as v2_reading
from tests.support.broker import Subscriber
from tests.support.proc import wait_until

ATTACKER = "127.0.0.2"
RATE, BURST = 5, 10


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


class Replayer(Reconnector):
    """Writes captured bytes flat out from another address; reconnects whenever it is closed."""

    def __init__(self, port: int, captured: bytes) -> None:
        super().__init__(port, ATTACKER)
        self.captured = captured

    def use(self, sock: socket.socket) -> None:
        while not self.stopped.is_set():
            sock.sendall(self.captured)


def alerts(dashboard: Subscriber, device: str) -> list[dict]:
    return [json.loads(p) for p in dashboard.on(f"Pico/{device}/alert")]


def test_a_replayed_stream_at_full_speed_publishes_at_most_the_rate_and_raises_the_alert(stack, publisher):
    """Issue 14 "Done when": 20 sniffed readings replayed flat out for 4 s while the device is online."""
    stack.start_proxy(MEDSEC_DEVICE_MAX_RATE=str(RATE), MEDSEC_DEVICE_BURST=str(BURST),
                      MEDSEC_IDLE_TIMEOUT="30")
    dev = unique("replayed")
    key, iv = stack.register(dev)
    real = Streamer(stack.config.proxy_port, key, iv, interval=0.5, device=dev)
    real.start()
    wait_until(lambda: stack.ingest(dev), 5, what="the real device's first reading")
    # Sniffed earlier (this proxy has not seen them yet): 20 readings the device sent some day.
    captured = b"".join(reading(key, iv, 1000 + n) for n in range(20))
    replayer = Replayer(stack.config.proxy_port, captured)
    started = time.monotonic()
    replayer.start()
    time.sleep(4.0)  # the attack's duration (not a synchronisation)
    replayer.stop()
    elapsed = time.monotonic() - started
    wait_until(lambda: stack.close_lines("replay"), 5, what="a replaying connection closed")
    published = [m for m in stack.ingest(dev) if m["src"][0] == ATTACKER]
    # At most the burst plus the rate over the attack (the real device takes its share of it).
    assert 0 < len(published) <= BURST + RATE * elapsed + 1
    assert len({m["values"]["PulseSig"] + m["values"]["Temp"] for m in published}) == len(published)
    # Dropped readings are counted, evented and logged, but reported once per device and reason
    # per interval: no flood.
    dropped = [e for e in stack.events(dev) if e["event"] == "dropped"]
    assert {e["reason"] for e in dropped} == {"replay", "rate_limited"}
    assert len(dropped) <= 2 * (elapsed / 5 + 2)
    assert len([ln for ln in stack.log().splitlines() if "event=dropped" in ln]) == len(dropped)
    metrics = (stack.config.run_dir / "metrics-proxy.prom").read_text
    wait_until(lambda: 'dropped_total{reason="replay"}' in metrics(), 5, what="the dropped counter")
    # Each replaying connection is closed after MEDSEC_MAX_DUPLICATES (3) replays, and such closes
    # count toward throttling the address like unknown keys (MEDSEC_THROTTLE_FAILURES=10).
    assert 2 <= len(stack.close_lines("replay")) <= replayer.connections
    assert all(f"device={dev} " in ln for ln in stack.close_lines("replay"))
    throttled = [e for e in stack.events() if e["event"] == "throttled"]
    assert [e["src"][0] for e in throttled] == [ATTACKER]
    assert replayer.connections < 10 + elapsed / 2.0 + 3  # then one start slot per MEDSEC_THROTTLE_GRACE
    # The device was on two connections from two addresses: an event with both, and the alert.
    session_events = [e for e in stack.events(dev) if e["event"] == "duplicate_session"]
    assert session_events and session_events[0]["reason"] == "new_address"
    first = session_events[0]
    assert {first["src"][0], first["peer"][0]} == {"127.0.0.1", ATTACKER}
    raised = wait_until(lambda: [a for a in alerts(publisher, dev) if a["state"] == "alert"], 5,
                        what="the duplicate-session alert on Pico/<id>/alert")
    assert raised[0]["rule"] == "duplicate_session" and raised[0]["device"] == dev
    assert {raised[0]["src"][0], raised[0]["peer"][0]} == {"127.0.0.1", ATTACKER}
    real.stop()


def test_replays_of_a_gone_device_neither_publish_nor_keep_it_online(stack, publisher):
    stack.start_proxy(MEDSEC_IDLE_TIMEOUT="30")
    dev = unique("gone")
    key, iv = stack.register(dev)
    real = Streamer(stack.config.proxy_port, key, iv, interval=0.1, device=dev)
    real.start()
    wait_until(lambda: len(stack.ingest(dev)) >= 10, 5, what="ten readings of the real device")
    real.stop()  # the device leaves; what it sent was sniffed
    wait_until(lambda: publisher.on(f"Pico/{dev}/status")[-1:] == [b"offline"], 5, what="offline")
    count = len(stack.ingest(dev))
    captured = b"".join(reading(key, iv, n) for n in range(real.sent))
    replayer = Replayer(stack.config.proxy_port, captured)
    replayer.start()
    wait_until(lambda: len(stack.close_lines("replay")) >= 3, 10, what="three replaying connections closed")
    replayer.stop()
    assert len(stack.ingest(dev)) == count  # nothing replayed was published
    assert [e["event"] for e in stack.events(dev)].count("connect") == 1  # only the real one
    assert publisher.on(f"Pico/{dev}/status")[-1] == b"offline"
    assert len(publisher.on(f"Pico/{dev}/json")) == count
    rejected = stack.rejected("replay", dev)
    assert rejected and all(e["src"][0] == ATTACKER for e in rejected)


def test_a_device_on_two_connections_from_one_address_is_reported_once_then_cleared(stack, publisher):
    stack.start_proxy(MEDSEC_IDLE_TIMEOUT="30")
    dev = unique("twice")
    key, iv = stack.register(dev)
    first, second, third = (connect(stack.config.proxy_port) for _ in range(3))
    first.sendall(reading(key, iv, 1))
    wait_until(lambda: stack.ingest(dev), 5)
    second.sendall(reading(key, iv, 2))
    third.sendall(reading(key, iv, 3))
    wait_until(lambda: len(stack.ingest(dev)) == 3, 5)
    raised = wait_until(lambda: alerts(publisher, dev), 5, what="the alert")
    assert raised[0]["state"] == "alert" and raised[0]["reason"] == "two_connections"
    second.close()
    third.close()
    cleared = wait_until(lambda: len(alerts(publisher, dev)) == 2 and alerts(publisher, dev), 5,
                         what="the clear once one connection is left")
    assert cleared[1]["state"] == "clear"
    assert [e["event"] for e in stack.events(dev)].count("duplicate_session") == 1
    assert publisher.on(f"Pico/{dev}/status")[-1] == b"online"  # the first connection is still there
    first.close()


def test_a_v2_connection_that_keeps_sending_duplicates_is_closed_but_a_resend_is_not(proxy):
    dev_id = unique("v2dup")
    secret = register_v2(proxy, dev_id)
    dev = session(secret)
    frames = [dev.seal(v2_reading(n))[1] for n in range(5)]
    sock = connect(proxy.config.proxy_port)
    sock.sendall(b"".join(frames))
    read_acks(sock, dev, 5)
    sock.close()
    # After a reconnect the device sends what it had no ack for, oldest first: forgiven.
    again = connect(proxy.config.proxy_port)
    again.sendall(b"".join(frames))
    assert [s for s, _ in read_acks(again, dev, 5)] == [1, 2, 3, 4, 5]
    again.sendall(dev.seal(v2_reading(5))[1])
    assert read_acks(again, dev, 1)[0][0] == 6
    # The same frame again and again: acked each time, and closed at the third (MEDSEC_MAX_DUPLICATES).
    for _ in range(3):
        again.sendall(frames[2])
    assert [s for s, _ in read_acks(again, dev, 3)] == [3, 3, 3]
    assert closed_by_peer(again)
    again.close()
    closed = wait_until(lambda: proxy.close_lines("too_many_duplicates"), 5, what="the close")
    assert f"device={dev_id} " in closed[0]
    assert wait_until(lambda: proxy.rejected("too_many_duplicates", dev_id), 5)
    assert [m["seq"] for m in proxy.ingest(dev_id)] == [1, 2, 3, 4, 5, 6]


def test_the_rate_limit_is_per_device_across_its_connections_and_spares_other_devices(stack):
    stack.start_proxy(MEDSEC_DEVICE_MAX_RATE="2", MEDSEC_DEVICE_BURST="5", MEDSEC_IDLE_TIMEOUT="30")
    flooded, calm = unique("flooded"), unique("calm")
    key, iv = stack.register(flooded)
    calm_key, calm_iv = stack.register(calm)
    started = time.monotonic()
    socks = [connect(stack.config.proxy_port, source) for source in ("127.0.0.1", ATTACKER)]
    for k, sock in enumerate(socks):  # 2 x 15 distinct readings at once, no replay among them
        sock.sendall(b"".join(reading(key, iv, 100 * k + n) for n in range(15)))
    other = connect(stack.config.proxy_port)
    other.sendall(b"".join(reading(calm_key, calm_iv, n) for n in range(5)))
    wait_until(lambda: len(stack.ingest(calm)) == 5, 5, what="every reading of the other device")
    metrics = (stack.config.run_dir / "metrics-proxy.prom").read_text

    def dropped() -> int:
        text = metrics()
        marker = 'medsec_proxy_dropped_total{reason="rate_limited"} '
        return int(text.split(marker)[1].split()[0]) if marker in text else 0

    # Every reading is either published or counted as dropped (the metrics file is rewritten every 2 s).
    wait_until(lambda: len(stack.ingest(flooded)) + dropped() == 30, 10, what="30 readings accounted for")
    elapsed = time.monotonic() - started
    published = len(stack.ingest(flooded))
    assert 5 <= published <= 5 + 2 * elapsed + 1
    assert [e["reason"] for e in stack.events(flooded) if e["event"] == "dropped"][:1] == ["rate_limited"]
    assert not [e for e in stack.events(flooded) if e["event"] == "dropped" and e["reason"] != "rate_limited"]
    for sock in socks + [other]:
        sock.close()
