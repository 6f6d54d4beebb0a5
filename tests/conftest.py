"""Fixtures shared by every test folder: a state dir on free ports, a real Mosquitto.

Also the test tiers. Every test is `unit`, `system` or `e2e`, decided from what it uses rather
than where it sits, so tests can move between folders:

- `system`: the test, or a fixture it uses at any depth, starts real processes or servers
  (Mosquitto, service processes, PostgreSQL, HAProxy, Node-RED, npm, a firmware build);
- `e2e`: whole deployments: tests in an `e2e` folder or a `*_e2e.py` file, browser tests
  (headless Chromium), scale-out (HAProxy in front of proxies sharing a PostgreSQL store);
- `unit`: the rest: pure code and single-process tests, no broker, database or browser
  (`make test-fast`). A unit test that starts one of those anyway fails, naming itself.

An explicit `@pytest.mark.unit` / `system` / `e2e` on a test wins over these rules.
"""
from __future__ import annotations

import inspect
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.config import Config
from tests.support.broker import start_mosquitto
from tests.support.proc import Processes, free_config

# The key store and the auth / keyadmin processes on it: state, store, pg_server, auth_proc, keyadmin.
pytest_plugins = ("tests.support.stores",)

TIERS = ("unit", "system", "e2e")
# Fixtures that start real processes or servers (tests/conftest.py, tests/support and the folders'
# conftest.py files). A new fixture need not be listed: its code is read for SPAWNS as well.
SYSTEM_FIXTURES = frozenset({
    "procs", "broker", "pg_server", "stack", "proxy", "shared_stack", "shared_proxy", "dstack",
    "running", "keyadmin", "auth_proc", "nodered", "gateway", "built_firmware", "packed", "rendered",
    "policy_broker", "container",
})
# Calls in a fixture's or a test's own code that start a process.
SPAWNS = ("Processes(", "start_mosquitto(", "start_postgres(", "start_nodered(", "HAProxy(",
          "subprocess.", "create_subprocess_", "medsec(")
# Programs a unit test must never start (checked while it runs).
HEAVY = frozenset({"mosquitto", "postgres", "initdb", "pg_ctl", "haproxy", "chromium", "chrome",
                   "node-red", "docker", "docker-compose", "supervisord"})


@pytest.fixture
def config(tmp_path) -> Config:
    """A fresh state directory with every port free; like a second stack on this machine."""
    return free_config(tmp_path / "home")


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


# --- tiers -------------------------------------------------------------------------------------

def _source(obj: object) -> str:
    try:
        return inspect.getsource(obj)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return ""


def _spawns(obj: object) -> bool:
    code = _source(obj)
    return any(call in code for call in SPAWNS)


def _uses_system_fixture(item: pytest.Item) -> bool:
    names = set(getattr(item, "fixturenames", ()))  # every fixture the test needs, at any depth
    if names & SYSTEM_FIXTURES:
        return True
    defs = item._fixtureinfo.name2fixturedefs if hasattr(item, "_fixtureinfo") else {}
    return any(_spawns(fixturedef.func) for name in names for fixturedef in defs.get(name, ()))


def _backend_is_a_server(item: pytest.Item) -> bool:
    """A backend chosen by parameter (the key-store contract on PostgreSQL) is a real server."""
    callspec = getattr(item, "callspec", None)
    return callspec is not None and any("postgres" in str(value) for value in callspec.params.values())


def _is_e2e(item: pytest.Item) -> bool:
    path = Path(str(item.path))
    if "e2e" in path.parts[:-1] or path.stem.endswith("_e2e"):
        return True
    module = _source(getattr(item, "module", None))
    if "chromium" in module.lower():
        return True  # drives a browser
    return "HAProxy(" in module and "pg_server" in getattr(item, "fixturenames", ())  # scale-out


def tier(item: pytest.Item) -> str:
    explicit = [name for name in TIERS if item.get_closest_marker(name)]
    if explicit:
        return explicit[0]
    if _is_e2e(item):
        return "e2e"
    function = getattr(item, "function", None)
    spawns = function is not None and _spawns(function)
    if spawns or _uses_system_fixture(item) or _backend_is_a_server(item):
        return "system"
    return "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = tier(item)
        if not item.get_closest_marker(name):
            item.add_marker(getattr(pytest.mark, name))


def _heavy(args: object) -> str | None:
    argv = [args] if isinstance(args, str | bytes | os.PathLike) else list(args or ())  # type: ignore[call-overload]
    for arg in argv:
        name = os.path.basename(os.fsdecode(arg))
        if name in HEAVY or name.startswith(("chromium", "postgres")):
            return name
    return None


def _guarded(item: pytest.Item) -> Iterator[None]:
    """While a unit test (and its fixtures) runs, starting a HEAVY program fails it, naming it."""
    if not item.get_closest_marker("unit"):
        yield
        return
    original = subprocess.Popen.__init__

    def checked(self, args, *more, **kw):  # type: ignore[no-untyped-def]
        found = _heavy(args)
        if found:
            self._child_created = False  # nothing started: keeps Popen.__del__ quiet
            raise AssertionError(f"{item.nodeid} is a unit test but starts {found}: "
                                 "mark it @pytest.mark.system, or have it use a system fixture")
        original(self, args, *more, **kw)

    subprocess.Popen.__init__ = checked  # type: ignore[method-assign]
    try:
        yield
    finally:
        subprocess.Popen.__init__ = original  # type: ignore[method-assign]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    yield from _guarded(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    yield from _guarded(item)
