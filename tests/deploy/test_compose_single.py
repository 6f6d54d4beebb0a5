"""compose.single.yaml (one host, Mosquitto) as docker-compose renders it: every service has a
healthcheck and a 2 s stop, waits on its dependencies' health, and only the allowed ports are
published, plain MQTT and the key-admin API on the loopback unless the operator says otherwise.
The running deployment is tested in test_compose_live.py."""
from __future__ import annotations

import shutil

import pytest

from services.cli.cmd_compose import METRICS_FRESH, bus_serving, init_deploy
from tests.deploy.test_compose import compose_config
from tests.support.proc import ROOT

SINGLE = ROOT / "compose.single.yaml"

# Runs docker-compose config: a system test.
pytestmark = [pytest.mark.skipif(shutil.which("docker-compose") is None, reason="no docker-compose"),
              pytest.mark.system]


def render(deploy, **env: str) -> dict:
    return compose_config(SINGLE, deploy, **env)


@pytest.fixture(scope="module")
def deploy(tmp_path_factory):
    d = tmp_path_factory.mktemp("single") / "deploy"
    init_deploy(d)
    return d


def _port(entry) -> tuple[int, str, int]:
    """(container port, host ip ("" = every interface), published port), from either notation."""
    if isinstance(entry, dict):
        return int(entry["target"]), entry.get("host_ip", ""), int(entry["published"])
    parts = entry.split("/")[0].split(":")
    return int(parts[-1]), (parts[0] if len(parts) == 3 else ""), int(parts[-2])


def _published(svc: dict) -> dict[int, str]:
    return {target: ip for target, ip, _ in map(_port, svc.get("ports", []))}


def _mount_target(entry) -> str:
    return entry["target"] if isinstance(entry, dict) else entry.split(":")[1]


def test_every_service_is_health_checked_stops_fast_and_waits_on_health(deploy):
    services = render(deploy)["services"]
    assert set(services) == {"postgres", "broker", "auth", "keyadmin", "proxy1", "proxy2", "publisher",
                             "history", "dispatch", "lb", "nodered"}
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert svc["stop_grace_period"] == "2s", name
        assert svc["restart"] == "unless-stopped", name
        for dep, cond in svc.get("depends_on", {}).items():
            assert cond == {"condition": "service_healthy"}, (name, dep)
    assert services["dispatch"]["environment"]["MEDSEC_HOST"] == "keyadmin"
    assert "/var/lib/medsec" in {_mount_target(v) for v in services["dispatch"]["volumes"]}
    for name in ("auth", "keyadmin"):
        assert services[name]["environment"]["MEDSEC_KEYSTORE_URL"].startswith("postgresql://medsec@postgres")
        assert "@postgres" in services[name]["environment"]["MEDSEC_KEYSTORE_URL"]
        assert ":" not in services[name]["environment"]["MEDSEC_KEYSTORE_URL"].split("//")[1].split("@")[0]


def test_ports_loopback_by_default_and_mqtt_bind_overrides(deploy):
    services = render(deploy)["services"]
    assert _published(services["lb"]) == {9998: "", 1883: "127.0.0.1", 8883: ""}
    assert _published(services["keyadmin"]) == {8080: "127.0.0.1"}
    assert _published(services["nodered"]) == {1880: ""}
    for name in ("postgres", "broker", "auth", "proxy1", "proxy2", "publisher", "dispatch"):
        assert not services[name].get("ports"), f"{name} must stay internal"
    opened = render(deploy, MEDSEC_MQTT_BIND="0.0.0.0", MEDSEC_MQTT_PORT="11883")["services"]
    assert {published: ip for _, ip, published in map(_port, opened["lb"]["ports"])}[11883] == "0.0.0.0"


def test_publisher_is_healthy_only_while_its_metrics_say_connected_and_are_fresh(tmp_path):
    metrics = tmp_path / "metrics-publisher.prom"
    assert not bus_serving("publisher", metrics), "no file: not started"
    metrics.write_text("medsec_publisher_accepted_total 3\nmedsec_publisher_bus_connected 1\n")
    now = metrics.stat().st_mtime
    assert bus_serving("publisher", metrics, now + 1)
    assert not bus_serving("publisher", metrics, now + METRICS_FRESH + 1), "stale: the publisher is stuck"
    metrics.write_text("medsec_publisher_accepted_total 3\nmedsec_publisher_bus_connected 0\n")
    assert not bus_serving("publisher", metrics, metrics.stat().st_mtime), "not connected to the broker"
    metrics.write_text("medsec_publisher_bus_connected 10\n")
    assert not bus_serving("publisher", metrics, metrics.stat().st_mtime)
