"""A Node-RED started the way the stack starts it: prepare() on free ports, with a real broker.

Module-scoped: starting Node-RED takes seconds, and the tests using it only read from it.
"""
from __future__ import annotations

import sys

import pytest

from services.common.config import Config
from services.nodered import admin_password
from services.nodered.runtime import ADMIN_USER
from tests.support.broker import start_mosquitto
from tests.support.proc import Processes, free_port, port_open, wait_until


def config_env(config: Config) -> dict[str, str]:
    return config.to_env()


def start_nodered(config: Config, procs: Processes):
    """`python -m services.nodered`: prepare() then exec Node-RED, as a person would run it."""
    proc = procs.start("nodered", [sys.executable, "-m", "services.nodered"], env=config_env(config))
    log = procs.log_dir / "nodered.log"
    # Node-RED listens before its flows (and the dashboard's socket.io) are up.
    wait_until(lambda: "Started flows" in log.read_text() or proc.poll() is not None, 30,
               what="Node-RED flows")
    assert proc.poll() is None, log.read_text()
    assert port_open(config.nodered_port)
    return proc


@pytest.fixture(scope="module")
def shared_config(tmp_path_factory) -> Config:
    return Config(home=tmp_path_factory.mktemp("nr") / "home", proxy_port=free_port(), admin_port=free_port(),
                  mqtt_port=free_port(), nodered_port=free_port())


@pytest.fixture(scope="module")
def nodered(shared_config, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("proclogs")
    procs = Processes(log_dir)
    try:
        start_mosquitto(shared_config, procs)
        proc = start_nodered(shared_config, procs)
        yield {
            "config": shared_config,
            "base": f"http://{shared_config.host}:{shared_config.nodered_port}",
            "user": ADMIN_USER,
            "password": admin_password(shared_config),
            "proc": proc,
            "log": log_dir / "nodered.log",
            "broker_log": log_dir / "mosquitto.log",
        }
    finally:
        procs.stop_all()
