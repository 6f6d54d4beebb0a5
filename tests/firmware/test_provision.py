"""`medsec device provision ID` registers the device and writes files the firmware boots from."""

from __future__ import annotations

import json
import stat
import sys
import uuid

from services.cli.main import main as medsec_main
from tests.firmware.conftest import WIFI
from tests.firmware.gateway import Gateway
from tests.support.proc import port_open, wait_until

SSID = next(iter(WIFI))


def medsec(capsys, *argv: str) -> tuple[int, str, str]:
    """The CLI in-process (its startup costs more than the provisioning itself)."""
    capsys.readouterr()
    code = medsec_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_provisioned_files_boot_a_device_that_reaches_the_gateway(
    config, config_env, procs, broker, tmp_path, make_device, monkeypatch, capsys
):
    for name, value in {**config_env, "MEDSEC_WIFI_PASSWORD": WIFI[SSID]}.items():
        monkeypatch.setenv(name, value)
    gateway = Gateway(config, config_env, procs, tmp_path / "proclogs").start()
    keyadmin = procs.start("keyadmin", [sys.executable, "-m", "services.keyadmin"], env=config_env)
    wait_until(lambda: port_open(config.admin_port) or keyadmin.poll() is not None, 15, what="keyadmin")
    device = f"prov-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "device"
    code, stdout, stderr = medsec(
        capsys,
        "device",
        "provision",
        device,
        "--server-ip",
        "127.0.0.1",
        "--server-port",
        str(config.proxy_port),
        "--wifi-ssid",
        SSID,
        "--net",
        "wlan",
        "--interval-ms",
        "100",
        "--out",
        str(out),
    )
    assert code == 0, stderr
    key1 = stdout.split("Key 1: ")[1].split()[0]
    site = json.loads((out / "settings.json").read_text())
    secrets = json.loads((out / "secrets.json").read_text())
    assert stat.S_IMODE((out / "secrets.json").stat().st_mode) == 0o600
    assert site["protocol"] == "v2" and site["device_id"] == device and "wifi_password" not in site
    assert secrets["config_key"] == key1 and len(key1) == 16 and secrets["wifi_password"] == WIFI[SSID]
    assert len(secrets["v2_master_key"]) == 32
    assert secrets["v2_master_key"] not in stdout + stderr

    # the very files boot the firmware, which then reaches the gateway
    dev = make_device(net="wlan", site=site, secrets=secrets)
    dash = gateway.dashboard(device)
    dev.start()
    wait_until(
        lambda: len(dash.on(f"Pico/{device}/json")) >= 2, 15, what="readings from the provisioned device"
    )
    assert json.loads(dash.on(f"Pico/{device}/json")[0])["protocol"] == "v2"
    dash.close()

    # an existing device is not silently re-keyed; bad input is refused before anything is registered
    code, _, stderr = medsec(
        capsys,
        "device",
        "provision",
        device,
        "--server-ip",
        "127.0.0.1",
        "--wifi-ssid",
        SSID,
        "--out",
        str(out),
    )
    assert code != 0 and "already" in stderr.lower()
    code, _, stderr = medsec(
        capsys,
        "device",
        "provision",
        "x1",
        "--server-ip",
        "10.0.0",
        "--wifi-ssid",
        SSID,
        "--out",
        str(tmp_path / "bad"),
    )
    assert code != 0 and "IPv4" in stderr and not (tmp_path / "bad").exists()
