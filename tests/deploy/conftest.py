"""Deploy fixtures: a real PostgreSQL server for the session (each test gets its own schema)."""
from __future__ import annotations

import pytest

from tests.support.postgres import pg_bin, start_postgres


@pytest.fixture(scope="session")
def pg_server():
    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (make setup-test installs it)")
    server = start_postgres()
    yield server
    server.stop()
