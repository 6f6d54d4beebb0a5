"""The generated mosquitto.conf: the Unix socket for the local services, and Nagle by transport."""
from __future__ import annotations

from pathlib import Path

from services.broker.mosquitto import mosquitto_conf
from services.common.config import Config


def conf_lines(socket: Path | None) -> list[str]:
    config = Config(home=Path("/var/lib/medsec"), mqtt_port=1883)
    return mosquitto_conf(config, "/usr/lib/dynsec.so", Path("/d.json"), Path("/data"), socket).splitlines()


def test_with_a_socket_the_services_listener_is_added_after_the_tcp_one_and_nagle_is_kept() -> None:
    lines = conf_lines(Path("/var/lib/medsec/run/mqtt.sock"))
    listeners = [line for line in lines if line.startswith("listener ")]
    assert listeners == ["listener 1883 127.0.0.1", "listener 0 /var/lib/medsec/run/mqtt.sock"]
    # TCP serves only subscribers then: their small packets may leave together.
    assert not any(line.startswith("set_tcp_nodelay") for line in lines)
    # One policy for both listeners: no listener may have settings of its own.
    assert "per_listener_settings false" in lines and "allow_anonymous false" in lines


def test_without_a_socket_tcp_only_and_small_packets_leave_at_once() -> None:
    lines = conf_lines(None)
    assert [line for line in lines if line.startswith("listener ")] == ["listener 1883 127.0.0.1"]
    assert "set_tcp_nodelay true" in lines
