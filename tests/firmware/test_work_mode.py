"""Work mode on the host: the firmware's own main loop, fake sensors, a real gateway.

Readings travel firmware -> ESP8266 simulator (AT commands over a fake UART)
or the Pico W back end (real sockets) -> proxy -> auth -> publisher -> Mosquitto,
and must arrive on the legacy topics exactly as the original firmware prints them.
"""

from __future__ import annotations

import json
import time

import pytest

from services.common import v2device
from tests.firmware.conftest import WIFI, expected_values
from tests.firmware.gateway import firmware_device, run_gateway
from tests.support.proc import wait_until
from tests.support.topics import LEGACY

SSID = next(iter(WIFI))
OUTAGE_S = 30


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """One gateway for the module (each test uses its own device ids): saves a start per test."""
    # The fake board's sensors never change, so every v1 reading is byte-identical, which the
    # proxy's replay check rightly drops (a real board's ADCs are never that still).
    yield from run_gateway(tmp_path_factory.mktemp("gateway"), replay_window=0)


def v1_device(make_device, gateway, net, **site):
    return firmware_device(make_device, gateway, "v1", "fw", net, **site)


@pytest.mark.parametrize("net", ["esp8266", "wlan"])
def test_v1_readings_reach_the_gateway(make_device, gateway, board, net):
    device, dev = v1_device(make_device, gateway, net)
    dash = gateway.dashboard(device)
    dev.start()
    wait_until(lambda: len(dash.on(f"Pico/{device}/json")) >= 3, 15, what="three readings on MQTT")
    expected = expected_values()
    for suffix, field in LEGACY.items():
        assert dash.on(f"Pico/{device}/{suffix}")[0] == expected[field].encode(), suffix
    first = json.loads(dash.on(f"Pico/{device}/json")[0])
    assert first["protocol"] == "v1" and first["Acel_x"] == float(expected["Acel_x"])
    assert not dev.error
    assert board.wdt_timeout == 8000 and board.wdt_feeds > 0 and board.wdt_max_gap_ms < 4000
    assert 1 in board.pin_writes["LED"], "the LED shows the online state"
    if net == "esp8266":
        cmds = dev.sim.commands
        assert "AT+CWMODE=1" in cmds and f'AT+CWJAP="{SSID}","{WIFI[SSID]}"' in cmds
        assert any(c.startswith(f'AT+CIPSTART=0,"TCP","127.0.0.1",{gateway.config.proxy_port}') for c in cmds)
    dash.close()


def v2_device(make_device, gateway, net, **site):
    return firmware_device(make_device, gateway, "v2", "fw2", net, **site)


def seqs(dash, device) -> list[int]:
    return [json.loads(p)["seq"] for p in dash.on(f"Pico/{device}/json")]


def ceiling(dev) -> int:
    """The v2 counter's ceiling on the device's flash (both copies agree when the device is at rest)."""
    records = [v2device.parse_record((dev.root / f"v2seq.{n}").read_bytes()) for n in (0, 1)]
    assert records[0] == records[1] is not None
    return records[0][0]


@pytest.mark.parametrize("net", ["esp8266", "wlan"])
def test_v2_readings_are_acknowledged_and_published(make_device, gateway, board, net):
    device, dev = v2_device(make_device, gateway, net)
    dash = gateway.dashboard(device)
    dev.start()
    wait_until(lambda: len(seqs(dash, device)) >= 3, 15, what="three v2 readings on MQTT")
    wait_until(
        lambda: (
            dev.app is not None and getattr(dev.app, "link", None) is not None and dev.app.link.acked >= 3
        ),
        10,
        what="acks",
    )
    got = json.loads(dash.on(f"Pico/{device}/json")[0])
    expected = expected_values()
    assert got["protocol"] == "v2" and got["seq"] >= 1
    assert dash.on(f"Pico/{device}/Physiological_Data/Temperature")[0] == expected["Temp"].encode()
    assert seqs(dash, device) == sorted(seqs(dash, device))
    # the counter ceiling is persisted ahead of use (write-ahead, OSCORE B.1.1)
    assert ceiling(dev) > max(seqs(dash, device))
    dash.close()


def test_v2_gateway_down_30s_loses_no_reading(make_device, gateway, board):
    """Done-when 5: the proxy is pulled down for 30 s; every reading taken meanwhile is resent and acked."""
    device, dev = v2_device(
        make_device,
        gateway,
        "esp8266",
        interval_ms=250,
        ring_size=256,
        backoff_min_ms=100,
        backoff_max_ms=2000,
    )
    dash = gateway.dashboard(device)
    dev.start()
    wait_until(lambda: len(seqs(dash, device)) >= 2, 15, what="readings before the outage")
    gateway.stop_proxy()
    down_at, taken = time.monotonic(), dev.app.sent
    # the outage is the scenario, not a synchronisation: 30 s of readings with nowhere to go
    wait_until(lambda: time.monotonic() - down_at >= OUTAGE_S, OUTAGE_S + 5, interval=0.5, what="the outage")
    during = dev.app.sent - taken
    assert during >= OUTAGE_S * 2 and dev.app.link.pending() >= during - 1, "readings must wait in the ring"
    gateway.start_proxy()
    wait_until(lambda: dev.app.link.pending() <= 1, 30, what="ring drained after the gateway returned")
    dev.stop()
    acked = dev.app.sent - dev.app.link.pending()
    # acks follow the internal bus PUBACK; the public copy may still be on its way
    wait_until(lambda: len(set(seqs(dash, device))) >= acked, 10, what="every acknowledged reading published")
    published = seqs(dash, device)
    # (the last reading may be published with its ack still on the way when the device stopped)
    assert sorted(set(published)) == list(range(1, max(published) + 1)), "a reading was lost"
    assert max(published) >= acked
    assert acked >= during and dev.app.link.dropped == 0
    assert len(published) == len(set(published)), "a resent reading was published twice"
    dash.close()


def json_count(dash, device) -> int:
    return len(dash.on(f"Pico/{device}/json"))


def test_v1_recovers_from_wifi_loss_and_missing_sensor(make_device, gateway, board, capsys):
    device, dev = v1_device(make_device, gateway, "esp8266")
    dash = gateway.dashboard(device)
    dev.start()
    wait_until(lambda: json_count(dash, device) >= 2, 15, what="first readings")
    # the access point goes away: the link drops, joins fail and are retried with back-off
    dev.sim.drop_wifi()
    wait_until(lambda: "CWJAP failed" in capsys.readouterr().out, 10, what="a failed rejoin")
    dev.sim.restore_wifi()
    count = json_count(dash, device)
    wait_until(lambda: json_count(dash, device) >= count + 2, 15, what="readings after Wi-Fi returns")
    # the patient probe is unplugged: no reading is made up, the loop goes on, readings resume
    import ds18x20

    roms = ds18x20.SENSOR["roms"]
    ds18x20.SENSOR["roms"] = []
    wait_until(lambda: "no DS18X20" in capsys.readouterr().out, 10, what="the sensor error")
    count = json_count(dash, device)
    ds18x20.SENSOR["roms"] = roms
    wait_until(lambda: json_count(dash, device) >= count + 2, 15, what="readings after the probe returns")
    assert not dev.error and dev.thread.is_alive()
    assert board.wdt_max_gap_ms < 8000, "the watchdog would have reset a healthy device"
    joins = [c for c in dev.sim.commands if c.startswith("AT+CWJAP=")]
    assert len(joins) >= 2
    dash.close()


def test_v2_counter_survives_a_reboot(make_device, gateway, board):
    """OSCORE B.1.1: after a reboot the device resumes above every seq it used; the gateway accepts it."""
    device, dev = v2_device(make_device, gateway, "wlan")
    dash = gateway.dashboard(device)
    dev.start()
    wait_until(lambda: len(seqs(dash, device)) >= 3, 15, what="readings before the reboot")
    dev.stop()
    # Every seq the device took before the reboot (some may still be on their way to the dashboard).
    before = dev.app.link.session.counter.next_seq - 1
    assert max(seqs(dash, device)) <= before
    top = ceiling(dev)
    dev.thread = None
    dev.start()  # a new App on the same flash: what main.py does after a reset
    wait_until(lambda: len([s for s in seqs(dash, device) if s >= top]) >= 2, 15, what="readings after it")
    after = [s for s in seqs(dash, device) if s > before]
    assert after and min(after) >= top > before
    dash.close()


def test_v2_reading_the_gateway_refuses_is_dropped_on_its_refusal(make_device, gateway, board, capsys):
    """A probe glitch (99 °C: out_of_range at the gateway) gets the gateway's authenticated refusal: the
    device drops exactly that reading after exactly that answer (sent once, refused once), and every later
    reading still arrives, in order, on the same connection."""
    import ds18x20

    device, dev = v2_device(make_device, gateway, "wlan", interval_ms=300)
    dash = gateway.dashboard(device)
    dev.start()
    wait_until(lambda: len(seqs(dash, device)) >= 2, 15, what="readings before the glitch")
    taken = dev.app.sent
    ds18x20.SENSOR["temp"] = 99.0
    wait_until(lambda: dev.app.sent > taken, 5, interval=0.02, what="a reading of the glitch")
    ds18x20.SENSOR["temp"] = 36.6
    bad = dev.app.sent - taken  # readings taken at 99 °C (one, at most two)
    wait_until(lambda: dev.app.link.refused == bad, 10, what="the refused readings given up")
    after = len(seqs(dash, device))
    wait_until(lambda: len(seqs(dash, device)) >= after + 3, 15, what="readings after the glitch")
    published = seqs(dash, device)
    assert published == sorted(published) and len(set(published)) == len(published)
    assert all(float(json.loads(p)["Temp"]) < 60 for p in dash.on(f"Pico/{device}/json"))
    assert dev.app.link.dropped == 0 and not dev.error
    out = capsys.readouterr().out
    assert out.count("event=reading_refused reason=out_of_range") == bad
    assert "event=link_lost" not in out and "event=resend" not in out  # the connection stayed up
    # The gateway saw and refused each bad reading exactly once.
    proxy_log = gateway._log("proxy").splitlines()
    refusals = [ln for ln in proxy_log if "event=refused" in ln and "out_of_range" in ln and device in ln]
    assert len(refusals) == bad
    dash.close()
