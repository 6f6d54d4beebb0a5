"""Configuration mode on the host: AP Med_IoT, the page over HTTP, submissions decrypted, checked, stored.

HTTP goes over real TCP: through the ESP8266 simulator (+IPD / CIPSEND) or the
Pico W back end's own socket server.
"""

from __future__ import annotations

import gzip
import http.client
import urllib.parse

import network  # noqa: E402  (the fake, on sys.path via conftest)
import pytest

from tests.firmware import page_crypto
from tests.firmware.conftest import KEY1, WIFI
from tests.support.proc import free_port, wait_until

SSID = next(iter(WIFI))
VALUES = {"server_ip": "127.0.0.1", "server_port": "9998", "wifi_name": SSID, "wifi_pass": WIFI[SSID]}


def get(port: int, path: str) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), body


def query(params: dict[str, str]) -> str:
    return urllib.parse.urlencode(params)


def sealed(dev, values: dict[str, str], key1: str = KEY1) -> dict[str, str]:
    """What our page sends: fetch the device's one-time nonce, then encrypt and MAC."""
    status, _, nonce = get(dev.http_port, "/nonce")
    assert status == 200 and len(nonce) == 16
    return page_crypto.seal(key1, values, nonce.decode())


@pytest.fixture(params=["esp8266", "wlan"])
def config_device(request, make_device, built_firmware):
    port = free_port()
    dev = make_device(
        net=request.param,
        mode="config",
        http_port=port,
        site={"device_id": "cfg-dev", "protocol": "v1"},
        secrets={"v1_key": "k" * 16, "v1_iv": "i" * 16},
    )
    dev.start()
    if dev.sim is not None:
        wait_until(lambda: dev.sim.server is not None, 10, what="AT+CIPSERVER")
    else:
        wait_until(lambda: network.STATE["ap_active"], 10, what="AP up")
    wait_until(lambda: get(port, "/nope")[0] == 404, 10, what="HTTP server")
    return dev


def test_access_point_is_open_med_iot_for_one_client(config_device):
    if config_device.sim is not None:
        ap = config_device.sim.ap
        assert (ap["ssid"], ap["ecn"], ap["max_conn"]) == ("Med_IoT", 0, 1)
        assert (
            "AT+CWMODE=2" in config_device.sim.commands and "AT+CIPSERVER=1,80" in config_device.sim.commands
        )
        assert config_device.sim.server_timeout == 10
    else:
        assert network.STATE["ap_config"] == {"essid": "Med_IoT", "security": 0, "max_clients": 1}


def test_page_is_served_gzipped_within_12_kb(config_device):
    status, headers, body = get(config_device.http_port, "/")
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert len(body) <= 12 * 1024 and int(headers["Content-Length"]) == len(body)
    html = gzip.decompress(body).decode()
    assert "<form" in html and "aes" in html.lower() and "wifi_pass" in html


def test_new_format_submission_is_stored_and_work_mode_starts(config_device):
    long_pw = "P" * 20 + "q" * 20
    wifi_net = {SSID: long_pw}
    if config_device.sim is not None:
        config_device.sim.networks.update(wifi_net)
    network.NETWORKS.update(wifi_net)
    status, _, body = get(
        config_device.http_port, "/save?" + query(sealed(config_device, {**VALUES, "wifi_pass": long_pw}))
    )
    assert status == 200, body
    wait_until(lambda: config_device.site().get("wifi_ssid") == SSID, 5, what="settings stored")
    assert config_device.site()["server_ip"] == "127.0.0.1" and config_device.site()["server_port"] == 9998
    assert config_device.secrets()["wifi_password"] == long_pw
    assert "wifi_password" not in config_device.site()
    # then work mode: joins the stored network
    if config_device.sim is not None:
        wait_until(lambda: f'AT+CWJAP="{SSID}","{long_pw}"' in config_device.sim.commands, 5, what="join")
    else:
        wait_until(lambda: network.STATE["joined"] == SSID, 5, what="join")


def test_original_page_format_is_still_accepted(config_device):
    # the original page: at most 16 characters per field
    old = {**VALUES, "wifi_name": "IoT", "wifi_pass": "pa$$w0rd"}
    status, _, body = get(config_device.http_port, "/action_page.php?" + query(page_crypto.legacy(KEY1, old)))
    assert status == 200, body
    wait_until(lambda: config_device.site().get("wifi_ssid") == "IoT", 5, what="settings stored")
    assert config_device.secrets()["wifi_password"] == "pa$$w0rd"


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"server_ip": "300.1.1.1"}, b"IPv4"),
        ({"server_port": "80"}, b"1024"),
        ({"wifi_name": ""}, b"Wi-Fi name"),
    ],
)
def test_invalid_values_are_refused_by_the_device(config_device, change, reason):
    before = (config_device.root / "settings.json").read_bytes()
    status, _, body = get(
        config_device.http_port, "/save?" + query(sealed(config_device, {**VALUES, **change}))
    )
    assert status == 400 and reason in body
    assert (config_device.root / "settings.json").read_bytes() == before


def test_tampered_or_foreign_submission_is_refused(config_device):
    before = (config_device.root / "settings.json").read_bytes()
    params = sealed(config_device, VALUES)
    params["server_ip"] = params["server_ip"][:-1] + ("0" if params["server_ip"][-1] != "0" else "1")
    status, _, body = get(config_device.http_port, "/save?" + query(params))
    assert status == 400 and b"altered" in body
    status, _, body = get(
        config_device.http_port, "/save?" + query(sealed(config_device, VALUES, "wrong-key-123456"))
    )
    assert status == 400
    status, _, body = get(config_device.http_port, "/save?server_ip=zz")
    assert status == 400 and b"missing" in body
    assert (config_device.root / "settings.json").read_bytes() == before
    assert b'"\\' not in body and WIFI[SSID].encode() not in body


def test_replayed_submission_is_refused(config_device):
    """A genuine submission captured on the open AP cannot be sent again: each nonce serves one submission."""
    before = (config_device.root / "settings.json").read_bytes()
    captured = sealed(config_device, VALUES)
    status, _, _ = get(config_device.http_port, "/save?" + query({**captured, "server_port": "1"}))
    assert status == 400  # any attempt uses the nonce up
    status, _, body = get(config_device.http_port, "/save?" + query(captured))
    assert status == 400 and b"stale or replayed" in body
    assert (config_device.root / "settings.json").read_bytes() == before
    status, _, _ = get(config_device.http_port, "/save?" + query(sealed(config_device, VALUES)))
    assert status == 200
