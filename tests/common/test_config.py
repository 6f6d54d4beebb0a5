"""Config: every setting from the environment, and Config.to_env() as its exact inverse."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from supervisor.datatypes import dict_of_key_value_pairs

from services.common.config import ENV_NAMES, EXIT_BAD_CONFIG, Config, ConfigError
from services.stack.programs import _env_line

NON_DEFAULT = {
    "home": Path("/srv/medsec home"), "host": "10.0.0.5", "proxy_port": 19998, "admin_port": 18080,
    "mqtt_port": 11883, "nodered_port": 11880, "max_reading_blocks": 9, "idle_timeout": 1.5,
    "reading_timeout": 2.5, "max_connections": 7, "throttle_failures": 0, "throttle_window": 3.5,
    "throttle_cooldown": 4.5, "throttle_max_cooldown": 5.5, "bus_timeout": 0.25, "auth_wait": 0.75,
    "auth_priority": 3,
    "mqtt_host": "emqx", "auth_socket_override": "/run/a.sock",
    "keystore_url": "postgresql://u:p%40ss@db/medsec", "proxy_protocol": True,
    "emqx_api_url": "http://emqx:18083", "publisher_shared": True, "publisher_id": "p-2",
    "mosquitto_dynsec": "/opt/dynsec.so", "dispatch_params": "/srv/params", "dispatch_line": "s1,s2",
    "dispatch_window": 30.0, "dispatch_key_ttl": 2.0,
    "proxy_trusted": "10.0.0.0/8,fd00::/8", "throttle_grace": 1.0, "throttle_queue": 3,
    "device_max_rate": 5.0, "device_burst": 4, "replay_window": 10.0, "max_duplicates": 2, "public_qos": 1,
    "legacy_qos": 2,
    "history_url": "postgresql://h:p%40ss@db/history", "history_raw_days": 2.5, "history_agg_days": 30.0,
}


def test_every_field_has_a_variable_and_a_non_default_case() -> None:
    names = {f.name for f in dataclasses.fields(Config)}
    assert names == set(ENV_NAMES) == set(NON_DEFAULT)
    assert len(set(ENV_NAMES.values())) == len(ENV_NAMES)


@pytest.mark.parametrize("values", [{"home": Path("/tmp/h")}, NON_DEFAULT], ids=["defaults", "all-set"])
def test_to_env_round_trips_every_setting(values) -> None:
    config = Config(**values)
    assert Config.from_env(config.to_env()) == config


def test_to_env_survives_supervisord_quoting() -> None:
    """`medsec up` hands Config.to_env() to supervisord: what the services get back is the same config."""
    config = Config(**NON_DEFAULT)
    line = _env_line(config.to_env()).replace("%%", "%")  # supervisord expands %% before it splits
    assert Config.from_env(dict_of_key_value_pairs(line)) == config


@pytest.mark.parametrize("name,value", [
    ("MEDSEC_PROXY_PORT", "nine"), ("MEDSEC_IDLE_TIMEOUT", "1m"), ("MEDSEC_PROXY_PROTOCOL", "2"),
    ("MEDSEC_PUBLISHER_SHARED", "true"), ("MEDSEC_DISPATCH_WINDOW", "x"), ("MEDSEC_DISPATCH_KEY_TTL", "-"),
    ("MEDSEC_MAX_CONNECTIONS", "1e3"), ("MEDSEC_HISTORY_RAW_DAYS", "week"), ("MEDSEC_HISTORY_RAW_DAYS", "0"),
    ("MEDSEC_HISTORY_AGG_DAYS", "-1"), ("MEDSEC_HISTORY_AGG_DAYS", "nan"), ("MEDSEC_PUBLIC_QOS", "0"),
    ("MEDSEC_PUBLIC_QOS", "3"), ("MEDSEC_PUBLIC_QOS", "two"), ("MEDSEC_LEGACY_QOS", "-1"),
    ("MEDSEC_LEGACY_QOS", "3"), ("MEDSEC_LEGACY_QOS", "1.5"),
])
def test_a_bad_value_is_a_config_error_naming_the_variable(name, value) -> None:
    with pytest.raises(ConfigError, match=name):
        Config.from_env({"MEDSEC_HOME": "/tmp/h", name: value})


@pytest.mark.parametrize("name,value", [
    ("MEDSEC_MQTT_PORT", "not-a-port"), ("MEDSEC_DISPATCH_WINDOW", "2 minutes"),
    ("MEDSEC_PROXY_PROTOCOL", "yes"),
])
def test_every_service_and_the_cli_exit_2_with_one_line_on_a_bad_setting(config_env, name, value) -> None:
    env = {**os.environ, **config_env, name: value}
    for argv in (["-m", "services.auth"], ["-m", "services.keyadmin"], ["-m", "services.proxy"],
                 ["-m", "services.publisher"], ["-m", "services.dispatch"], ["-m", "services.history"],
                 ["-m", "services.cli.main", "status"], ["-m", "services.cli.main", "device", "list"]):
        done = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == EXIT_BAD_CONFIG, (argv, done.stderr)
        lines = [x for x in done.stderr.splitlines() if x.strip()]
        assert len(lines) == 1 and name in lines[0] and "bad configuration" in lines[0], (argv, done.stderr)


@pytest.mark.parametrize("home, settings, expected", [
    ("/var/lib/medsec", {}, "/var/lib/medsec/run/mqtt.sock"),
    ("/var/lib/medsec", {"mqtt_host": "emqx"}, None),  # a broker elsewhere: TCP
    ("/" + "h" * 92, {}, "/" + "h" * 92 + "/run/mqtt.sock"),  # 107 bytes: the longest that fits
    ("/" + "h" * 93, {}, None),  # 108 bytes: no room for the address's NUL
    ("/srv/medsec home", {}, None),  # Mosquitto's config cannot hold the path
    ("/srv/medsec\thome", {}, None),
])
def test_the_broker_socket_is_in_the_run_dir_only_where_a_local_broker_can_have_one(home, settings, expected):
    socket = Config(home=Path(home), **settings).broker_socket
    assert (None if socket is None else str(socket)) == expected
