"""A Node-RED started the way the stack starts it: prepare() on free ports, with a real broker.

Module-scoped: starting Node-RED takes seconds, and the tests using it only read from it.
State directories live where Node-RED's own OS user can reach them (pytest's temporary
directories are closed to other users): a fresh directory under /tmp, removed afterwards.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.config import Config
from services.nodered import LOGINS, login_password
from services.nodered.runtime import ADMIN_USER
from tests.support.broker import start_mosquitto
from tests.support.proc import Processes, free_config, port_open, wait_until


def config_env(config: Config) -> dict[str, str]:
    return config.to_env()


def start_nodered(config: Config, procs: Processes):
    """`python -m services.nodered`: prepare() then exec Node-RED, as a person would run it."""
    proc = procs.start("nodered", [sys.executable, "-m", "services.nodered"], env=config_env(config))
    log = procs.log_dir / "nodered.log"
    # Up means both: its flows (and the dashboard's socket.io) started, and its HTTP port listening.
    # Node-RED logs "Started flows" before it calls listen(), so neither alone will do.
    wait_until(lambda: ("Started flows" in log.read_text() and port_open(config.nodered_port))
               or proc.poll() is not None, 30, what="Node-RED flows and port")
    assert proc.poll() is None, log.read_text()
    return proc


def _reachable_config() -> Iterator[Config]:
    """A config under a fresh root Node-RED's own user can reach; the root removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="medsec-nr-", dir="/tmp"))
    os.chmod(root, 0o711)  # passage only, like /home/<user> on many systems
    try:
        yield free_config(root / "home")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def config():
    """Overrides tests/conftest.py's: a state directory Node-RED's own user can reach."""
    yield from _reachable_config()


@pytest.fixture(scope="module")
def shared_config():
    yield from _reachable_config()


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
            "password": login_password(shared_config, ADMIN_USER),
            "passwords": {user: login_password(shared_config, user) for user in LOGINS},
            "proc": proc,
            "log": log_dir / "nodered.log",
            "broker_log": log_dir / "mosquitto.log",
        }
    finally:
        procs.stop_all()
