"""Auth fixtures: a key store per backend (tests run unchanged against each), vectors, a running auth."""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest

from services.auth.keystore_pg import open_store
from services.common.state import init_state
from tests.support.postgres import pg_bin, start_postgres
from tests.support.proc import port_open, wait_until

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "v1.json"
# The key-store contract runs against each backend; postgres is a real server (tests/support/postgres.py).
BACKENDS = ["sqlite", "postgres"]
# Modules that test the store itself (in-process). The others start real auth/keyadmin processes
# on the state dir's default store, so they run on SQLite.
ALL_BACKEND_MODULES = ("test_keystore", "test_v2")


def pytest_generate_tests(metafunc):
    if "store_config" in metafunc.fixturenames:
        module = metafunc.module.__name__.rsplit(".", 1)[-1]
        backends = BACKENDS if module in ALL_BACKEND_MODULES else ["sqlite"]
        metafunc.parametrize("store_config", backends, indirect=True)


@pytest.fixture
def state(config):
    """An initialised state directory (master key, admin token, broker passwords)."""
    init_state(config)
    return config


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL server for the session; each test gets its own schema."""
    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (make setup-test installs it)")
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture
def store_config(request, state):
    """The state dir's config, pointing at the backend under test (MEDSEC_KEYSTORE_URL)."""
    if request.param == "postgres":
        return dataclasses.replace(state, keystore_url=request.getfixturevalue("pg_server").schema_url())
    return state


@pytest.fixture
def store(store_config):
    s = open_store(store_config)
    yield s
    s.close()


@pytest.fixture
def tamper(store_config):
    """Run SQL on the store's database behind its back, past the append-only triggers:
    what an attacker with write access to the database file or server could do."""
    def run(sql: str) -> None:
        if store_config.keystore_url:
            import psycopg

            with psycopg.connect(store_config.keystore_url, autocommit=True) as db:
                db.execute("ALTER TABLE audit DISABLE TRIGGER audit_no_update")
                db.execute(sql)
        else:
            import sqlite3

            db = sqlite3.connect(store_config.keystore_path)
            db.execute("DROP TRIGGER audit_no_update")
            db.execute(sql)
            db.commit()
            db.close()
    return run


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
