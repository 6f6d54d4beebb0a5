"""Auth fixtures: the v1 vectors; the v2 tests run on every key store backend (tests/support/stores.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.stores import BACKENDS

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "v1.json"
# Modules that test auth on the store in-process. The others start real auth/keyadmin processes
# on the state dir's default store, so they run on SQLite.
ALL_BACKEND_MODULES = ("test_v2",)


def pytest_generate_tests(metafunc):
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "store_config" in metafunc.fixturenames and module in ALL_BACKEND_MODULES:
        metafunc.parametrize("store_config", BACKENDS, indirect=True)


@pytest.fixture(scope="session")
def vectors() -> list[dict]:
    """The independent v1 vectors whose plaintext is a complete, valid reading."""
    readings = json.loads(VECTORS.read_text())["readings"]
    return [r for r in readings if r["plaintext"].startswith('{"Temp":"') and r["plaintext"].count('"') == 28]
