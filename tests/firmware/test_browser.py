"""The built configuration page in headless Chromium, served by the firmware's own HTTP handler (host run)."""

from __future__ import annotations

import json
import shutil
import subprocess

import network  # noqa: E402  (the fake)
import pytest

from tests.firmware.conftest import FIRMWARE, KEY1
from tests.support.proc import ROOT, free_port, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PLAYWRIGHT = FIRMWARE / "web" / "node_modules" / "playwright-core"
SCRIPT = ROOT / "tests" / "firmware" / "browser_config.mjs"
PASSWORD = "Tr0ub4dor&3-horse-battery-staple-40chars"  # 40 characters, shell and URL specials included
TYPED = {
    "key1": KEY1,
    "server_ip": "192.168.10.20",
    "server_port": "9998",
    "wifi_name": 'Ward 3 "East", 2nd floor',
    "wifi_pass": PASSWORD,
}


def browse(url: str, scenarios: list[dict], tmp_path) -> list[dict]:
    path = tmp_path / "scenarios.json"
    path.write_text(json.dumps(scenarios))
    run = subprocess.run(
        ["node", str(SCRIPT), str(PLAYWRIGHT), url, str(path)],
        capture_output=True,
        text=True,
        timeout=90,
        env={"PATH": "/usr/bin:/bin", "CHROMIUM": CHROMIUM, "HOME": str(tmp_path)},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


@pytest.mark.skipif(not shutil.which("node") or not shutil.which(CHROMIUM), reason="node or chromium missing")
def test_page_in_chromium_stores_exactly_what_was_typed(make_device, built_firmware, tmp_path):
    # Over the original hardware's path (ESP8266 AT server); the Pico W socket server serves the same
    # handler and is covered at the HTTP level in test_config_mode.py.
    net = "esp8266"
    assert len(PASSWORD) == 40
    port = free_port()
    dev = make_device(
        net=net,
        mode="config",
        http_port=port,
        site={"device_id": "browser-dev"},
        secrets={"v1_key": "k" * 16, "v1_iv": "i" * 16},
    )
    before = (dev.root / "settings.json").read_bytes()
    dev.start()
    if dev.sim is not None:
        wait_until(lambda: dev.sim.server is not None, 10, what="AT+CIPSERVER")
    else:
        wait_until(lambda: network.STATE["ap_active"], 10, what="AP up")
    invalid = {**TYPED, "server_ip": "192.168.1", "server_port": "80", "wifi_name": "", "wifi_pass": "short"}
    results = browse(
        f"http://127.0.0.1:{port}/",
        [
            {"values": invalid},
            {"values": TYPED, "tamper": True},
            {"values": TYPED},
        ],
        tmp_path,
    )
    refused_in_page, tampered, saved = results

    # served gzipped and small (on 127.0.0.1 the page is a secure context; on 192.168.4.1 it is not,
    # which is why it brings its own AES and HMAC instead of WebCrypto)
    assert saved["encoding"] == "gzip" and 0 < saved["pageBytes"] <= 12 * 1024
    # invalid inputs: refused by the page itself, nothing sent
    assert refused_in_page["requests"] == [] and not refused_in_page["ok"]
    assert set(refused_in_page["errors"]) == {"server_ip", "server_port", "wifi_name", "wifi_pass"}
    # a field altered in transit: the device refuses it, nothing stored
    assert not tampered["ok"] and "altered" in tampered["status"]
    assert len(tampered["requests"]) == 1
    # the genuine submission: stored byte for byte; nothing typed appears in clear in the URL
    assert saved["ok"], saved
    url = saved["requests"][0]
    assert PASSWORD not in url and "Ward" not in url and "192.168.10.20" not in url
    wait_until(lambda: (dev.root / "settings.json").read_bytes() != before, 5, what="settings stored")
    site, secrets = dev.site(), dev.secrets()
    assert (site["server_ip"], site["server_port"], site["wifi_ssid"]) == (
        "192.168.10.20",
        9998,
        TYPED["wifi_name"],
    )
    assert secrets["wifi_password"] == PASSWORD
