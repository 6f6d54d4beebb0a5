"""The publisher as a real process on a real Mosquitto with the project's accounts and ACL."""
from __future__ import annotations

import json
import signal
import sys
import uuid

import pytest

from tests.support.broker import Subscriber, start_mosquitto
from tests.support.proc import wait_until
from tests.support.topics import LEGACY

VALUES = {"Temp": "36.600", "TempMcu": "23.700", "PulseSig": "2.123", "Acel_x": "-0.01",
          "Acel_y": "0.000", "Acel_z": "1.002", "TempMpu": "23.400"}


def new_device() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def reading(device: str, n: int, **over: object) -> bytes:
    msg = {"device": device, "ts": 1763790000.0 + n, "seq": None, "protocol": "v1", "values": dict(VALUES),
           "src": ["10.1.2.3", 40000 + n], "gw": ["127.0.0.1", 9998], "uid": f"test:{device}:{n}"}
    msg.update(over)
    return json.dumps(msg).encode()


def start_publisher(procs, config_env, tmp_path):
    proc = procs.start("publisher", [sys.executable, "-m", "services.publisher"], env=config_env)
    log = tmp_path / "proclogs" / "publisher.log"
    count = log.read_text().count("bus_subscribed") if log.exists() else 0
    wait_until(lambda: log.read_text().count("bus_subscribed") > count, 10, what="publisher to subscribe")
    return proc


@pytest.fixture
def publisher(broker, procs, config_env, tmp_path):
    return start_publisher(procs, config_env, tmp_path)


@pytest.fixture
def proxy(config, broker):
    client = Subscriber(config, "proxy")
    yield client
    close(client)


@pytest.fixture
def dashboard(config, broker):
    client = Subscriber(config, "dashboard")
    yield client
    close(client)


def close(client: Subscriber) -> None:
    # Disconnect first: it wakes paho's network loop, so loop_stop() does not wait out its 1 s select.
    client.client.disconnect()
    client.close()


def send(proxy: Subscriber, topic: str, payload: bytes) -> None:
    proxy.client.publish(topic, payload, qos=1).wait_for_publish(5)


def jsons(sub: Subscriber, device: str) -> list[dict]:
    return [json.loads(p) for p in sub.on(f"Pico/{device}/json")]


def test_a_reading_appears_on_every_public_topic(publisher, proxy, dashboard) -> None:
    device = new_device()
    dashboard.subscribe(f"Pico/{device}/#", qos=2)
    send(proxy, f"medsec/ingest/{device}", reading(device, 1))
    wait_until(lambda: len(dashboard.messages) >= 12, 5, what="12 public messages")
    base = f"Pico/{device}/"
    expected = {base + sub: VALUES[name].encode() for sub, name in LEGACY.items()}
    expected.update({
        base + "Ip_address": b"10.1.2.3", base + "Port_address": b"40001",
        base + "Internal_Server/Ip_address": b"127.0.0.1", base + "Internal_Server/Port_address": b"9998",
    })
    got = {m.topic: m.payload for m in dashboard.messages if m.topic != base + "json"}
    assert got == expected
    [doc] = jsons(dashboard, device)
    assert doc == {"device": device, "ts": 1763790001.0, "seq": None, "protocol": "v1", "Temp": 36.6,
                   "TempMcu": 23.7, "PulseSig": 2.123, "Acel_x": -0.01, "Acel_y": 0.0, "Acel_z": 1.002,
                   "TempMpu": 23.4}
    assert len(dashboard.messages) == 12
    # the legacy values at MEDSEC_LEGACY_QOS (0, as the design they come from), the rest at QoS 2
    qos = {m.topic: m.qos for m in dashboard.messages}
    assert {qos[base + sub] for sub in LEGACY} == {0}
    assert {q for t, q in qos.items() if t[len(base):] not in LEGACY} == {2}


def test_the_legacy_values_go_at_the_qos_that_is_set(broker, procs, config_env, tmp_path, proxy, dashboard):
    start_publisher(procs, {**config_env, "MEDSEC_LEGACY_QOS": "1"}, tmp_path)
    device = new_device()
    dashboard.subscribe(f"Pico/{device}/#", qos=2)
    send(proxy, f"medsec/ingest/{device}", reading(device, 1))
    wait_until(lambda: len(dashboard.messages) >= 12, 5, what="12 public messages")
    base = f"Pico/{device}/"
    assert {m.qos for m in dashboard.messages if m.topic[len(base):] in LEGACY} == {1}
    assert {m.qos for m in dashboard.messages if m.topic[len(base):] not in LEGACY} == {2}


def test_addresses_are_retained_and_sent_again_only_when_they_change(
        publisher, proxy, dashboard, config) -> None:
    device = new_device()
    dashboard.subscribe(f"Pico/{device}/#")
    base = f"Pico/{device}/"
    for n in range(3):  # one connection: one source port
        send(proxy, f"medsec/ingest/{device}", reading(device, n, src=["10.1.2.3", 40000]))
    wait_until(lambda: len(jsons(dashboard, device)) == 3, 5, what="three readings")
    assert len(dashboard.messages) == 12 + 8 + 8
    assert dashboard.on(base + "Port_address") == [b"40000"]
    send(proxy, f"medsec/ingest/{device}", reading(device, 3, src=["10.1.2.3", 40001]))  # reconnected
    wait_until(lambda: len(jsons(dashboard, device)) == 4, 5, what="the fourth reading")
    assert dashboard.on(base + "Port_address") == [b"40000", b"40001"]
    assert len(dashboard.messages) == 12 + 8 + 8 + 12
    late = Subscriber(config, "dashboard")  # a dashboard opened later still shows the addresses
    late.subscribe(f"Pico/{device}/#")
    wait_until(lambda: len(late.messages) >= 4, 5, what="the retained addresses")
    assert {m.topic: (m.payload, m.retain) for m in late.messages} == {
        base + "Ip_address": (b"10.1.2.3", True), base + "Port_address": (b"40001", True),
        base + "Internal_Server/Ip_address": (b"127.0.0.1", True),
        base + "Internal_Server/Port_address": (b"9998", True)}
    close(late)


def test_invalid_messages_give_an_event_and_nothing_public(
        publisher, proxy, dashboard, config, tmp_path) -> None:
    device = new_device()
    monitor = Subscriber(config, "monitor")
    monitor.subscribe(f"medsec/events/{device}")
    dashboard.subscribe(f"Pico/{device}/#")
    bad = [
        ({**VALUES, "PulseSig": "3.900"}, "out_of_range"),
        ({**VALUES, "Temp": "hot"}, "not_numeric"),
        ({k: v for k, v in VALUES.items() if k != "Acel_y"}, "missing_field"),
    ]
    for i, (values, _) in enumerate(bad):
        send(proxy, f"medsec/ingest/{device}", reading(device, i, values=values))
    send(proxy, f"medsec/ingest/{device}", b"{not json")
    send(proxy, f"medsec/ingest/{device}", reading("someone-else", 9))
    send(proxy, f"medsec/ingest/{device}", reading(device, 100))  # a good one after them
    wait_until(lambda: jsons(dashboard, device), 5, what="the good reading")
    expected = [reason for _, reason in bad] + ["bad_bus_message", "device_mismatch"]
    wait_until(lambda: len(monitor.messages) >= 5, 5, what="five rejection events")
    events = [json.loads(m.payload) for m in monitor.messages]
    assert [e["reason"] for e in events] == expected
    assert all(e["event"] == "rejected" and e["device"] == device for e in events)
    assert [d["ts"] for d in jsons(dashboard, device)] == [1763790100.0]
    assert len(dashboard.messages) == 12  # only the good reading's
    log = (tmp_path / "proclogs" / "publisher.log").read_text()
    for reason in expected:
        assert f"reason={reason}" in log
    close(monitor)


def test_duplicates_are_dropped(publisher, proxy, dashboard) -> None:
    device = new_device()
    dashboard.subscribe(f"Pico/{device}/json")
    for _ in range(3):
        send(proxy, f"medsec/ingest/{device}", reading(device, 1))  # v1: same uid
        send(proxy, f"medsec/ingest/{device}", reading(device, 2, protocol="v2", seq=7, uid=None))
    send(proxy, f"medsec/ingest/{device}", reading(device, 3, protocol="v2", seq=8, uid=None))
    wait_until(lambda: any(d["seq"] == 8 for d in jsons(dashboard, device)), 5, what="the last reading")
    assert [(d["ts"], d["seq"]) for d in jsons(dashboard, device)] == [
        (1763790001.0, None), (1763790002.0, 7), (1763790003.0, 8)]


def test_status_is_retained_and_follows_connection_events(publisher, proxy, dashboard, config) -> None:
    device = new_device()
    dashboard.subscribe("Pico/+/status")
    send(proxy, "medsec/events/~unidentified", json.dumps({"event": "connect", "device": None}).encode())
    send(proxy, f"medsec/events/{device}", json.dumps({"event": "connect", "device": device}).encode())
    wait_until(lambda: dashboard.on(f"Pico/{device}/status"), 5, what="online")
    late = Subscriber(config, "dashboard")  # joins after the fact: sees the retained status
    late.subscribe("Pico/+/status")
    wait_until(lambda: late.on(f"Pico/{device}/status"), 5, what="retained online")
    assert late.on(f"Pico/{device}/status") == [b"online"]
    assert all(m.retain for m in late.messages)
    send(proxy, f"medsec/events/{device}", json.dumps({"event": "disconnect", "device": device}).encode())
    wait_until(lambda: late.on(f"Pico/{device}/status")[-1:] == [b"offline"], 5, what="offline")
    assert not any("unidentified" in t for t in late.topics() | dashboard.topics())
    close(late)


def test_readings_sent_while_it_is_down_arrive_once_after_restart(
        publisher, proxy, dashboard, procs, config_env, tmp_path) -> None:
    device = new_device()
    dashboard.subscribe(f"Pico/{device}/json")
    send(proxy, f"medsec/ingest/{device}", reading(device, 0))
    wait_until(lambda: jsons(dashboard, device), 5, what="first reading")
    procs.stop(publisher, signal.SIGKILL)
    for n in range(1, 21):
        send(proxy, f"medsec/ingest/{device}", reading(device, n))
    start_publisher(procs, config_env, tmp_path)
    wait_until(lambda: len(jsons(dashboard, device)) >= 21, 10, what="the queued readings")
    send(proxy, f"medsec/ingest/{device}", reading(device, 21))
    wait_until(lambda: any(d["ts"] == 1763790021.0 for d in jsons(dashboard, device)), 5,
               what="a reading after restart")
    seen = sorted(int(d["ts"] - 1763790000.0) for d in jsons(dashboard, device))
    # Reading 0 may come twice if the kill caught its publishes and its ingest PUBACK mid-write: it is
    # redelivered (at least once, never lost). Everything sent while it was down arrives exactly once.
    assert [n for n in seen if n] == list(range(1, 22))
    assert 1 <= seen.count(0) <= 2


def test_sigterm_exits_cleanly_and_metrics_count(publisher, proxy, dashboard, procs, config) -> None:
    device = new_device()
    dashboard.subscribe(f"Pico/{device}/json")
    send(proxy, f"medsec/ingest/{device}", reading(device, 1))
    send(proxy, f"medsec/ingest/{device}", reading(device, 2, values={**VALUES, "Temp": "x"}))
    send(proxy, f"medsec/ingest/{device}", reading(device, 3))
    wait_until(lambda: len(jsons(dashboard, device)) == 2, 5, what="two readings")
    procs.stop(publisher, signal.SIGTERM)
    assert publisher.returncode == 0
    text = (config.run_dir / "metrics-publisher.prom").read_text()
    assert "medsec_publisher_accepted_total 2\n" in text
    assert 'medsec_publisher_rejected_total{reason="not_numeric"} 1\n' in text


def test_reconnects_by_itself_when_the_broker_restarts(publisher, broker, procs, config, tmp_path) -> None:
    log = tmp_path / "proclogs" / "publisher.log"
    procs.stop(broker)  # SIGTERM: Mosquitto saves its store, the publisher's session included
    start_mosquitto(config, procs)
    wait_until(lambda: log.read_text().count("bus_subscribed") >= 2, 10, what="the publisher to come back")
    assert "session_present=1" in log.read_text().split("bus_disconnected")[-1]
    device = new_device()
    proxy, dashboard = Subscriber(config, "proxy"), Subscriber(config, "dashboard")
    dashboard.subscribe(f"Pico/{device}/json")
    send(proxy, f"medsec/ingest/{device}", reading(device, 1))
    wait_until(lambda: jsons(dashboard, device), 5, what="a reading after the broker restart")
    assert publisher.poll() is None
    close(proxy)
    close(dashboard)


def test_killed_under_load_loses_nothing(publisher, proxy, dashboard, procs, config_env, tmp_path) -> None:
    """SIGKILL while readings stream in: after a restart every reading is there; a few at most twice."""
    device = new_device()
    dashboard.subscribe(f"Pico/{device}/json")
    total = 400
    infos = [proxy.client.publish(f"medsec/ingest/{device}", reading(device, n), qos=1) for n in range(total)]
    wait_until(lambda: len(jsons(dashboard, device)) >= 50, 10, what="the stream to flow")
    procs.stop(publisher, signal.SIGKILL)
    for info in infos:
        info.wait_for_publish(10)  # all of them are in the broker now
    start_publisher(procs, config_env, tmp_path)
    wait_until(lambda: len({d["ts"] for d in jsons(dashboard, device)}) == total, 20, what="every reading")
    counts: dict[float, int] = {}
    for doc in jsons(dashboard, device):
        counts[doc["ts"]] = counts.get(doc["ts"], 0) + 1
    assert max(counts.values()) <= 2


def test_a_resend_after_a_restart_is_still_a_duplicate(publisher, proxy, dashboard, procs, config_env,
                                                       tmp_path) -> None:
    """A v2 reading resent after a publisher restart (its device got no ack: the proxy or auth went away
    after the bus took it) is recognised: the duplicate window is saved at stop and loaded at start."""
    device = new_device()
    dashboard.subscribe(f"Pico/{device}/json")
    for n in range(1, 4):
        send(proxy, f"medsec/ingest/{device}", reading(device, n, protocol="v2", seq=n, gen=1, uid=None))
    wait_until(lambda: len(jsons(dashboard, device)) == 3, 5, what="three readings")
    procs.stop(publisher)  # SIGTERM: a graceful stop
    start_publisher(procs, config_env, tmp_path)
    assert "event=dedup_loaded devices=" in (tmp_path / "proclogs" / "publisher.log").read_text()
    for n in (2, 3, 4):
        send(proxy, f"medsec/ingest/{device}", reading(device, n, protocol="v2", seq=n, gen=1, uid=None))
    wait_until(lambda: any(d["seq"] == 4 for d in jsons(dashboard, device)), 5, what="the new reading")
    assert [d["seq"] for d in jsons(dashboard, device)] == [1, 2, 3, 4]


def test_after_a_rotation_a_seq_seen_under_the_old_key_is_not_a_duplicate(publisher, proxy, dashboard):
    """Issue 14 item 6: a v2 device's seq starts again under a new key; dedup is by (device, gen, seq)."""
    device = new_device()
    dashboard.subscribe(f"Pico/{device}/json")
    for n, gen, seq in ((1, 1, 5), (2, 1, 6), (3, 2, 5), (4, 2, 6), (5, 2, 5), (6, 1, 6), (7, None, 5)):
        send(proxy, f"medsec/ingest/{device}", reading(device, n, protocol="v2", seq=seq, gen=gen, uid=None))
    send(proxy, f"medsec/ingest/{device}", reading(device, 8, protocol="v2", seq=9, gen=2, uid=None))
    wait_until(lambda: any(d["seq"] == 9 for d in jsons(dashboard, device)), 5, what="the last reading")
    # (2, 5) and (2, 6) are new; (2, 5) and (1, 6) again are duplicates; no gen is its own space.
    assert [d["ts"] - 1763790000.0 for d in jsons(dashboard, device)] == [1, 2, 3, 4, 7, 8]


def test_duplicate_session_events_become_a_retained_alert_and_its_clear(publisher, proxy, dashboard) -> None:
    device = new_device()
    dashboard.subscribe("Pico/+/alert")
    start = {"event": "duplicate_session", "device": device, "reason": "new_address",
             "detail": f"{device} on two connections", "ts": 1.5, "src": ["10.0.0.9", 5000],
             "peer": ["10.0.0.8", 4000], "protocol": "v1"}
    send(proxy, "medsec/events/~unidentified", json.dumps(dict(start, device=None)).encode())
    send(proxy, f"medsec/events/{device}", json.dumps(dict(start, device="someone-else")).encode())
    send(proxy, f"medsec/events/{device}", json.dumps(start).encode())
    got = wait_until(lambda: dashboard.on(f"Pico/{device}/alert"), 5, what="the alert")
    alert = json.loads(got[0])
    assert alert == {"device": device, "rule": "duplicate_session", "state": "alert", "reason": "new_address",
                     "text": f"{device} on two connections", "src": ["10.0.0.9", 5000],
                     "peer": ["10.0.0.8", 4000], "ts": 1.5}
    send(proxy, f"medsec/events/{device}", json.dumps(
        {"event": "duplicate_session_end", "device": device, "reason": "eof", "detail": "down to one",
         "ts": 2.0, "src": ["10.0.0.8", 4000], "protocol": "v1"}).encode())
    wait_until(lambda: len(dashboard.on(f"Pico/{device}/alert")) == 2, 5, what="the clear")
    cleared = json.loads(dashboard.on(f"Pico/{device}/alert")[1])
    assert cleared["state"] == "clear" and cleared["peer"] is None
    assert dashboard.topics() == {f"Pico/{device}/alert"}  # nothing for the forged or unnamed events
