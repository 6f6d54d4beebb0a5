"""Work mode on the host: the firmware's own main loop, fake sensors, a real gateway.

Readings travel firmware -> ESP8266 simulator (AT commands over a fake UART)
or the Pico W back end (real sockets) -> proxy -> auth -> publisher -> Mosquitto,
and must arrive on the legacy topics exactly as the original firmware prints them.
"""
from __future__ import annotations

import json
import uuid

import pytest

from tests.firmware.conftest import WIFI, expected_values
from tests.firmware.gateway import Gateway
from tests.support.proc import wait_until

LEGACY = {
    "Physiological_Data/Temperature": "Temp",
    "Physiological_Data/Pulse_Signal": "PulseSig",
    "Physiological_Data/Accelerometer/x": "Acel_x",
    "Physiological_Data/Accelerometer/y": "Acel_y",
    "Physiological_Data/Accelerometer/z": "Acel_z",
    "Internal_Device_Data/Temperature/MCU": "TempMcu",
    "Internal_Device_Data/Temperature/MPU": "TempMpu",
}
SSID = next(iter(WIFI))


@pytest.fixture
def gateway(config, config_env, procs, broker, tmp_path):
    return Gateway(config, config_env, procs, tmp_path / "proclogs").start()


def v1_device(make_device, gateway, net, **site):
    device = f"fw-{net}-{uuid.uuid4().hex[:8]}"
    key, iv = gateway.register_v1(device)
    dev = make_device(net=net, site={"device_id": device, "server_ip": "127.0.0.1",
                                     "server_port": gateway.config.proxy_port, "wifi_ssid": SSID, **site},
                      secrets={"wifi_password": WIFI[SSID], "v1_key": key, "v1_iv": iv})
    return device, dev


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
    assert board.wdt_timeout == 8000 and board.wdt_feeds > 0
    if net == "esp8266":
        cmds = dev.sim.commands
        assert "AT+CWMODE=1" in cmds and f'AT+CWJAP="{SSID}","{WIFI[SSID]}"' in cmds
        assert any(c.startswith(f'AT+CIPSTART=0,"TCP","127.0.0.1",{gateway.config.proxy_port}') for c in cmds)
    dash.close()
