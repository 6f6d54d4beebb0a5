"""History fixtures: the store on each backend (SQLite file, a schema on a real PostgreSQL)."""
from __future__ import annotations

import pytest

from services.common.state import hash_token
from services.history.store import open_history
from services.keyadmin.app import create_app
from services.keyadmin.events import NoKeyEvents
from tests.history.support import READ
from tests.support.stores import config_on

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def history_config(request, config):
    return config_on(request, config, request.param, "history_url")


@pytest.fixture
def history(history_config):
    store = open_history(history_config)
    yield store
    store.close()


@pytest.fixture
def client(state, store, history_config, history):
    """The key-admin app production runs, on the history store under test, and a read token."""
    store.add_token("dashboard-reader", "read", hash_token(READ), actor="test")
    app = create_app(history_config, {"TESTING": True, "STORE": store, "EVENTS": NoKeyEvents()})
    return app.test_client()
