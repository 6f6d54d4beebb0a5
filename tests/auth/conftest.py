"""Auth fixtures: a key store per backend (tests run unchanged against each), vectors, a running auth."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from services.auth.keystore import SQLiteKeyStore
from services.common.state import init_state
from tests.support.proc import port_open, wait_until

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "v1.json"
# Add "postgres" here once that backend exists (issue 8); every store test runs against each.
BACKENDS = ["sqlite"]


@pytest.fixture
def state(config):
    """An initialised state directory (master key, admin token, broker passwords)."""
    init_state(config)
    return config


@pytest.fixture(params=BACKENDS)
def store(request, state):
    if request.param == "sqlite":
        s = SQLiteKeyStore.open(state)
    else:  # pragma: no cover - future backends
        raise NotImplementedError(request.param)
    yield s
    s.close()


@pytest.fixture(scope="session")
def vectors() -> list[dict]:
    """The independent v1 vectors whose plaintext is a complete, valid reading."""
    readings = json.loads(VECTORS.read_text())["readings"]
    return [r for r in readings if r["plaintext"].startswith('{"Temp":"') and r["plaintext"].count('"') == 28]


@pytest.fixture
def auth_proc(state, config_env, procs):
    """The real `python -m services.auth` on the test's state dir."""
    proc = procs.start("auth", [sys.executable, "-m", "services.auth"], env=config_env)
    wait_until(lambda: state.auth_socket.exists() or proc.poll() is not None, 10, what="auth socket")
    assert proc.poll() is None, "auth exited at start"
    assert os.stat(state.auth_socket).st_mode & 0o777 == 0o600
    return proc


@pytest.fixture
def keyadmin(state, broker, config_env, procs):
    """The real `python -m services.auth.keyadmin` (waitress) with the real broker."""
    proc = procs.start("keyadmin", [sys.executable, "-m", "services.auth.keyadmin"], env=config_env)
    wait_until(lambda: port_open(state.admin_port) or proc.poll() is not None, 15, what="keyadmin to listen")
    assert proc.poll() is None
    return proc
