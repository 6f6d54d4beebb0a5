"""Key store fixtures: every test here that uses `store_config` runs on each backend."""
from __future__ import annotations

import pytest

from tests.support.stores import BACKENDS


def pytest_generate_tests(metafunc):
    if "store_config" in metafunc.fixturenames:
        metafunc.parametrize("store_config", BACKENDS, indirect=True)


@pytest.fixture
def tamper(store_config):
    """Run SQL on the store's database behind its back, past the append-only triggers:
    what an attacker with write access to the database file or server could do."""
    def run(*sqls: str) -> None:
        if store_config.keystore_url:
            import psycopg

            with psycopg.connect(store_config.keystore_url, autocommit=True) as db:
                db.execute("ALTER TABLE audit DISABLE TRIGGER audit_no_update")
                for sql in sqls:
                    db.execute(sql)
        else:
            import sqlite3

            db = sqlite3.connect(store_config.keystore_path)
            db.execute("DROP TRIGGER IF EXISTS audit_no_update")
            for sql in sqls:
                db.execute(sql)
            db.commit()
            db.close()
    return run
