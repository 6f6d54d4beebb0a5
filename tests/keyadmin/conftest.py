"""Key-admin fixtures: the stations API runs on every key store backend (tests/support/stores.py)."""
from __future__ import annotations

from tests.support.stores import BACKENDS

ALL_BACKEND_MODULES = ("test_stations_api",)


def pytest_generate_tests(metafunc):
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "store_config" in metafunc.fixturenames and module in ALL_BACKEND_MODULES:
        metafunc.parametrize("store_config", BACKENDS, indirect=True)
