"""Host runs of the firmware: its own modules under CPython with fake hardware.

firmware/lib and tests/firmware/fakes go on sys.path, so `import machine`,
`network`, `onewire`, `ds18x20`, `cryptolib` resolve to the fakes and the
firmware's modules import as they do on the board.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.proc import ROOT, wait_until

FIRMWARE = ROOT / "firmware"
LIB = FIRMWARE / "lib"
FAKES = Path(__file__).parent / "fakes"
for _path in (str(LIB), str(FAKES)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import ds18x20  # noqa: E402  (the fake)
import machine  # noqa: E402  (the fake)
import network  # noqa: E402  (the fake)

from tests.firmware.esp_sim import Esp8266Sim  # noqa: E402

WIFI = {"ward-3": "correct horse battery staple"}
KEY1 = "Key1-0123456789a"
# MPU6050 registers 0x3B..0x42: ax, ay, az, temperature (raw, big-endian signed)
MPU_RAW = (-2000, 8192, 16384, -3920)


def expected_values() -> dict[str, str]:
    """The reading the fake board produces, as the original firmware prints it."""
    mcu_volts = machine.BOARD.adc[4] * 3.3 / 65535
    return {
        "Temp": "%.3f" % ds18x20.SENSOR["temp"],  # noqa: UP031 (as the firmware prints it)
        "TempMcu": "%.3f" % (27 - (mcu_volts - 0.706) / 0.001721),
        "PulseSig": "%.3f" % (machine.BOARD.adc[0] * 3.3 / 65535),
        "Acel_x": "%.2f" % (MPU_RAW[0] / 16384),
        "Acel_y": "%.3f" % (MPU_RAW[1] / 16384),
        "Acel_z": "%.3f" % (MPU_RAW[2] / 16384),
        "TempMpu": "%.3f" % (MPU_RAW[3] / 340 + 36.53),
    }


@dataclass
class Device:
    """One simulated board running the firmware's main loop in a thread."""

    root: Path
    net: str
    sim: Esp8266Sim | None
    http_port: int
    app: object = None
    thread: threading.Thread | None = None
    error: list = field(default_factory=list)

    def start(self, **kwargs) -> Device:
        import app as firmware_app

        page = FIRMWARE / "build" / "web" / "config.html.gz"
        # The ESP8266 listens on port 80 as on the board; the simulator maps it to http_port on this machine.
        port = 80 if self.sim is not None else self.http_port
        self.app = firmware_app.App(root=str(self.root), http_port=port, page_path=str(page), **kwargs)

        def run() -> None:
            try:
                self.app.run()
            except BaseException as exc:  # surfaced by the test through .error
                self.error.append(exc)

        self.thread = threading.Thread(target=run, name="firmware", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.app is not None:
            self.app.stop()
        if self.thread is not None:
            self.thread.join(10)
            assert not self.thread.is_alive(), "firmware main loop did not stop"
        if self.sim is not None:
            self.sim.close()

    def site(self) -> dict:
        return json.loads((self.root / "settings.json").read_text())

    def secrets(self) -> dict:
        return json.loads((self.root / "secrets.json").read_text())


@pytest.fixture
def board():
    machine.BOARD.reset()
    ds18x20.SENSOR.update(temp=36.6, roms=[b"\x28\x01\x02\x03\x04\x05\x06\x07"])
    machine.BOARD.i2c_mem[(0x68, 0x3B)] = struct.pack(">hhhh", *MPU_RAW)
    network.NETWORKS.clear()
    network.NETWORKS.update(WIFI)
    network.STATE.update(ap_config={}, ap_active=False, joined=None)
    return machine.BOARD


@pytest.fixture
def make_device(tmp_path, board):
    made: list[Device] = []

    def make(
        net: str = "esp8266",
        mode: str = "work",
        site: dict | None = None,
        secrets: dict | None = None,
        http_port: int = 0,
    ) -> Device:
        root = tmp_path / f"flash{len(made)}"
        root.mkdir()
        (root / "settings.json").write_text(
            json.dumps(
                {"net": net, "interval_ms": 100, "backoff_min_ms": 50, "backoff_max_ms": 400, **(site or {})}
            )
        )
        (root / "secrets.json").write_text(json.dumps({"config_key": KEY1, **(secrets or {})}))
        board.pins[3] = 1 if mode == "config" else 0
        board.pins[4] = 0 if mode == "config" else 1
        sim = None
        if net == "esp8266":
            sim = Esp8266Sim(dict(WIFI), http_port=http_port)
            board.uart = sim.uart
        dev = Device(root, net, sim, http_port)
        made.append(dev)
        return dev

    yield make
    for dev in made:
        dev.stop()


@pytest.fixture(scope="session")
def built_firmware():
    """`make -C firmware build` once per session: .mpy files and the gzipped page."""
    result = subprocess.run(
        ["make", "-C", str(FIRMWARE), "build", f"VENV={Path(sys.executable).parent.parent}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


__all__ = ["KEY1", "WIFI", "Device", "expected_values", "wait_until"]
