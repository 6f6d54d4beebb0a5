"""The simulator against the real services: key-admin registration, proxy, auth, publisher, Mosquitto."""
from __future__ import annotations

import json
import os
import sys
import uuid

import pytest

from services.common.adminclient import AdminClient
from services.sim import registry, run_devices
from tests.support.broker import Subscriber
from tests.support.proc import port_open, wait_until


@pytest.fixture
def live(config, config_env, procs, broker, tmp_path):
    logs = tmp_path / "proclogs"

    def started(name: str, *events: str) -> None:
        path = logs / f"{name}.log"
        wait_until(lambda: all(f"event={e}" in path.read_text() for e in events), 15, what=f"{name} to start")

    procs.start("auth", [sys.executable, "-m", "services.auth"], env=config_env)
    procs.start("keyadmin", [sys.executable, "-m", "services.keyadmin"], env=config_env)
    procs.start("publisher", [sys.executable, "-m", "services.publisher"], env=config_env)
    wait_until(lambda: config.auth_socket.exists(), 15, what="auth socket")
    procs.start("proxy", [sys.executable, "-m", "services.proxy"], env=config_env)
    started("publisher", "bus_subscribed")
    started("proxy", "listening", "bus_subscribed")
    wait_until(lambda: port_open(config.admin_port), 15, what="key-admin API")
    return config


def test_registers_once_then_reuses_the_stored_credentials(live) -> None:
    config = live
    prefix = f"r{uuid.uuid4().hex[:6]}-"
    first = registry.ensure_devices(config, 3, prefix=prefix)
    assert [c.id for c in first] == [f"{prefix}001", f"{prefix}002", f"{prefix}003"]
    assert all(len(c.secrets["key"]) == 16 and len(c.secrets["iv"]) == 16 for c in first)
    path = registry.store_path(config)
    assert os.stat(path).st_mode & 0o777 == 0o600
    again = registry.ensure_devices(config, 3, prefix=prefix)
    assert again == first  # reused, not re-registered or rotated
    status, listed = AdminClient.from_config(config).request("GET", "/devices")
    assert status == 200
    assert sorted(d["id"] for d in listed["devices"] if d["id"].startswith(prefix)) == [c.id for c in first]
    assert not any("key" in d or "iv" in d for d in listed["devices"])  # the list never shows secrets
    # Credentials lost (state file deleted): the sim's own devices get new ones instead of failing.
    path.unlink()
    rotated = registry.ensure_devices(config, 1, prefix=prefix)
    assert rotated[0].secrets["key"] != first[0].secrets["key"]


def test_simulated_devices_reach_the_public_topics(live) -> None:
    config = live
    prefix = f"s{uuid.uuid4().hex[:6]}-"
    dashboard = Subscriber(config, "dashboard")
    dashboard.subscribe("Pico/#")
    stats = run_devices(config, 2, rate=10, duration=1.5, prefix=prefix)
    assert stats.errors == 0 and stats.sent >= 2 * 10
    ids = [f"{prefix}001", f"{prefix}002"]
    wait_until(lambda: sum(len(dashboard.on(f"Pico/{d}/json")) for d in ids) == stats.sent, 10,
               what="every reading on Pico/<id>/json")
    for device in ids:
        docs = [json.loads(p) for p in dashboard.on(f"Pico/{device}/json")]
        assert docs and all(d["device"] == device and d["protocol"] == "v1" for d in docs)
        assert all(0 <= d["PulseSig"] <= 3.3 and 36.2 <= d["Temp"] <= 37.5 for d in docs)
        assert len(dashboard.on(f"Pico/{device}/Physiological_Data/Pulse_Signal")) == len(docs)
    # The devices disconnected when the run ended: the retained status follows the proxy's events.
    wait_until(lambda: all(dashboard.on(f"Pico/{d}/status")[-1:] == [b"offline"] for d in ids), 10,
               what="status offline")
    assert all(dashboard.on(f"Pico/{d}/status")[0] == b"online" for d in ids)
    dashboard.client.disconnect()
    dashboard.close()
