"""History fixtures: the store on each backend (SQLite file, a schema on a real PostgreSQL)."""
from __future__ import annotations

import dataclasses

import pytest

from services.history.store import open_history

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def history_config(request, config):
    if request.param == "postgres":
        return dataclasses.replace(config, history_url=request.getfixturevalue("pg_server").schema_url())
    return config


@pytest.fixture
def history(history_config):
    store = open_history(history_config)
    yield store
    store.close()
