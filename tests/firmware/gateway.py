"""A real medsec gateway for the firmware tests: Mosquitto, auth, proxy and publisher processes."""
from __future__ import annotations

import secrets
import string
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.config import Config
from services.keystore.models import NewDevice
from tests.firmware.conftest import WIFI
from tests.support.broker import Subscriber, broker_under
from tests.support.proc import Processes, port_open, wait_until
from tests.support.stores import add_sqlite_device

SSID = next(iter(WIFI))


def text16() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(16))


@dataclass
class Gateway:
    config: Config
    env: dict[str, str]
    procs: Processes
    log_dir: Path
    proxy: object = None
    auth: object = None

    def start(self) -> Gateway:
        self.start_auth()
        self.procs.start("publisher", [sys.executable, "-m", "services.publisher"], env=self.env)
        wait_until(lambda: "bus_subscribed" in self._log("publisher"), 10, what="publisher to subscribe")
        self.start_proxy()
        return self

    def start_auth(self) -> None:
        self.auth = self.procs.start("auth", [sys.executable, "-m", "services.auth"], env=self.env)
        wait_until(lambda: self.config.auth_socket.exists(), 10, what="auth socket")

    def stop_auth(self) -> None:
        self.procs.stop(self.auth)
        wait_until(lambda: not self.config.auth_socket.exists(), 5, what="auth socket to go")

    def _log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def start_proxy(self) -> None:
        before = self._log("proxy").count("event=bus_subscribed")
        self.proxy = self.procs.start("proxy", [sys.executable, "-m", "services.proxy"], env=self.env)
        wait_until(lambda: port_open(self.config.proxy_port)
                   and self._log("proxy").count("event=bus_subscribed") > before, 10, what="proxy to listen")

    def stop_proxy(self) -> None:
        self.procs.stop(self.proxy)
        wait_until(lambda: not port_open(self.config.proxy_port), 5, what="proxy to stop listening")

    def register_v1(self, device: str) -> tuple[str, str]:
        key, iv = text16(), text16()
        add_sqlite_device(self.config, NewDevice(device, "v1", {"key": key, "iv": iv}))
        return key, iv

    def register_v2(self, device: str) -> tuple[str, str]:
        master, kid = secrets.token_hex(16), secrets.token_hex(4)
        add_sqlite_device(self.config, NewDevice(device, "v2", {"master_key": master, "key_id": kid}))
        return master, kid

    def dashboard(self, device: str) -> Subscriber:
        sub = Subscriber(self.config, "dashboard")
        sub.subscribe(f"Pico/{device}/#")
        return sub


def firmware_device(make_device, gateway: Gateway, protocol: str, prefix: str, net: str,
                    **site: Any) -> tuple[str, Any]:
    """A firmware device (make_device) registered on the gateway for protocol "v1" or "v2", its
    settings pointing at the gateway's proxy over net; (device id, device)."""
    device = f"{prefix}-{net}-{uuid.uuid4().hex[:8]}"
    if protocol == "v1":
        key, iv = gateway.register_v1(device)
        secrets = {"v1_key": key, "v1_iv": iv}
    else:
        master, kid = gateway.register_v2(device)
        secrets = {"v2_master_key": master, "v2_key_id": kid}
        site = {"protocol": "v2", **site}
    dev = make_device(
        net=net,
        site={"device_id": device, "server_ip": "127.0.0.1", "server_port": gateway.config.proxy_port,
              "wifi_ssid": SSID, **site},
        secrets={"wifi_password": WIFI[SSID], **secrets},
    )
    return device, dev


def run_gateway(home: Path, **settings: object) -> Iterator[Gateway]:
    """For a fixture to yield from: a started gateway on free ports under home, with these Config
    settings (passed to every process as Config.to_env()); every process stopped afterwards."""
    with broker_under(home, **settings) as (config, procs, _):
        yield Gateway(config, config.to_env(), procs, home / "proclogs").start()
