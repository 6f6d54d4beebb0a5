"""Fixtures for the key store and the processes on it (a pytest plugin, loaded by tests/conftest.py).

`store_config` is the state dir's config on SQLite unless a test folder
parametrises it (tests/keystore runs its whole contract on SQLite and on a real
PostgreSQL server; tests/auth runs its v2 tests on both).
"""
from __future__ import annotations

import dataclasses
import os
import sys

import pytest

from services.common.config import Config
from services.common.state import init_state
from services.keystore.backends import open_store
from services.keystore.credentials import make_secret
from services.keystore.models import NewDevice
from services.keystore.sqlite import SQLiteKeyStore
from services.sim.devices import Credentials
from tests.support.postgres import pg_bin, start_postgres
from tests.support.proc import port_open, wait_until

# The backends a parametrised `store_config` runs on; postgres is a real server (tests/support/postgres.py).
BACKENDS = ["sqlite", "postgres"]


def add_sqlite_device(config: Config, device: NewDevice) -> None:
    """Register one device straight in the state dir's SQLite store, for tests on a running gateway."""
    store = SQLiteKeyStore.open(config)
    try:
        store.add(device)
    finally:
        store.close()


def config_on(request, config: Config, backend: str, url_field: str) -> Config:
    """`config` as is for "sqlite"; for "postgres", its `url_field` (keystore_url, history_url) set
    to a fresh schema on the session's real PostgreSQL server."""
    if backend == "postgres":
        return dataclasses.replace(config, **{url_field: request.getfixturevalue("pg_server").schema_url()})
    return config


def add_v2_devices(config: Config, prefix: str, count: int) -> list[Credentials]:
    """Register `count` v2 devices <prefix>-00.. in the state dir's SQLite store; their credentials."""
    store = SQLiteKeyStore.open(config)
    creds = []
    try:
        for i in range(count):
            secret = make_secret("v2")
            store.add(NewDevice(f"{prefix}-{i:02d}", "v2", secret))
            creds.append(Credentials(f"{prefix}-{i:02d}", "v2", secret))
    finally:
        store.close()
    return creds


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
    return config_on(request, state, getattr(request, "param", "sqlite"), "keystore_url")


@pytest.fixture
def store(store_config):
    s = open_store(store_config)
    yield s
    s.close()


def start_auth(procs, state: Config, env: dict[str, str], prefix: list[str] = ()):
    """The real `python -m services.auth` on `state`, run under `prefix` (nice, setpriv, ...), once
    its socket is there."""
    proc = procs.start("auth", [*prefix, sys.executable, "-m", "services.auth"], env=env)
    wait_until(lambda: state.auth_socket.exists() or proc.poll() is not None, 10, what="auth socket")
    assert proc.poll() is None, "auth exited at start"
    return proc


@pytest.fixture
def auth_proc(state, config_env, procs):
    """The real `python -m services.auth` on the test's state dir."""
    proc = start_auth(procs, state, config_env)
    assert os.stat(state.auth_socket).st_mode & 0o777 == 0o600
    return proc


@pytest.fixture
def keyadmin(state, broker, config_env, procs):
    """The real `python -m services.keyadmin` (waitress) with the real broker."""
    proc = procs.start("keyadmin", [sys.executable, "-m", "services.keyadmin"], env=config_env)
    wait_until(lambda: port_open(state.admin_port) or proc.poll() is not None, 15, what="keyadmin to listen")
    assert proc.poll() is None
    return proc
