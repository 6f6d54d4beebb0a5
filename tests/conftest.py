"""Fixtures shared by every test folder: a state dir on free ports, a real Mosquitto."""
from __future__ import annotations

import pytest

from services.common.config import Config
from tests.support.broker import start_mosquitto
from tests.support.proc import Processes, free_port


@pytest.fixture
def config(tmp_path) -> Config:
    """A fresh state directory with every port free; like a second stack on this machine."""
    return Config(
        home=tmp_path / "home",
        proxy_port=free_port(),
        admin_port=free_port(),
        mqtt_port=free_port(),
        nodered_port=free_port(),
    )


@pytest.fixture
def config_env(config) -> dict[str, str]:
    """The environment that makes a service process use `config`."""
    return config.to_env()


@pytest.fixture
def procs(tmp_path):
    log_dir = tmp_path / "proclogs"
    log_dir.mkdir()
    group = Processes(log_dir)
    yield group
    group.stop_all()


@pytest.fixture
def broker(config, procs):
    """A real Mosquitto running the project's generated config."""
    return start_mosquitto(config, procs)
