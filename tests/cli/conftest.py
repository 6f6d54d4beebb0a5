"""CLI fixtures: a state dir in the environment, and a real key-admin process on it."""
from __future__ import annotations

import sys

import pytest

from services.cli.main import main
from services.common.state import init_state
from tests.support.proc import port_open, wait_until


@pytest.fixture
def env(config, config_env, monkeypatch):
    init_state(config)
    for name, value in config_env.items():
        monkeypatch.setenv(name, value)
    return config


def start_keyadmin(procs, config, config_env, name: str = "keyadmin"):
    proc = procs.start(name, [sys.executable, "-m", "services.keyadmin"], env=config_env)
    wait_until(lambda: port_open(config.admin_port) or proc.poll() is not None, 15, what="keyadmin")
    assert proc.poll() is None
    return proc


@pytest.fixture
def keyadmin(env, config_env, procs):
    return start_keyadmin(procs, env, config_env)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
