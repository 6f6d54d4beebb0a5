"""PostgreSQL key store specifics (test_contract.py runs the shared contract on both backends):
several instances on one database, a dropped connection, secrets never in the database or errors."""
from __future__ import annotations

import os
import time

import psycopg
import pytest

from services.common.config import Config
from services.keystore import postgres
from services.keystore.backends import open_store
from services.keystore.credentials import make_secret
from services.keystore.models import KeyStoreError, NewDevice
from services.keystore.postgres import PostgresKeyStore, describe_url
from services.keystore.sealing import Sealer
from tests.support.proc import wait_until
from tests.support.relay import Relay


@pytest.fixture
def url(pg_server) -> str:
    return pg_server.schema_url()


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(os.urandom(32))


def test_a_window_never_moves_back(url, sealer):
    """Two auth instances: the one that served the device earlier flushes an older window late."""
    a, b = PostgresKeyStore(url, sealer), PostgresKeyStore(url, sealer)
    assert b.save_v2_window("kid1", "dev", "12:fff:7")
    assert not a.save_v2_window("kid1", "dev", "5:1f:1")  # stale copy
    assert not a.save_v2_window("kid1", "dev", "12:7ff:7")  # the same last, a seq fewer
    assert b.v2_window("kid1") == "12:fff:7"
    assert a.save_v2_window("kid1", "dev", "12:fff:f")  # the same seqs, more ack bits: kept
    assert not a.save_v2_window("kid1", "dev", "300:1:0")  # accepting goes through advance_v2_window
    assert b.v2_window("kid1") == "12:fff:f"
    a.close()
    b.close()


def test_instances_see_each_others_changes_and_only_those(url, sealer):
    a, b = PostgresKeyStore(url, sealer), PostgresKeyStore(url, sealer)
    _, mark = b.credentials_changed("v1", -1)
    a.add(NewDevice("pico-1", "v1", make_secret("v1")))
    changed, mark2 = b.credentials_changed("v1", mark)
    assert [c.device_id for c in changed] == ["pico-1"] and mark2 > mark
    a.record_seen({})  # counters are not changes
    assert b.credentials_changed("v1", mark2) == ([], mark2)
    a.revoke("pico-1")
    assert [c.revoked for c in b.credentials_changed("v1", mark2)[0]] == [True]
    a.close()
    b.close()


def test_reconnects_after_the_server_drops_the_connection(url, sealer, pg_server):
    store = PostgresKeyStore(url, sealer)
    store.add(NewDevice("pico-1", "v1", make_secret("v1")))
    def drop_connections() -> None:
        with psycopg.connect(pg_server.url(), autocommit=True) as admin:
            killed = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                   " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
                                   ).fetchall()
        assert any(ok for (ok,) in killed)

    drop_connections()
    store.add(NewDevice("pico-2", "v1", make_secret("v1")))  # a write first
    drop_connections()
    assert [d.id for d in store.list()] == ["pico-1", "pico-2"]  # then a read
    drop_connections()
    store.save_v2_window("kid", "pico-2", "3:7:7")  # auth's per-frame write
    assert store.v2_window("kid") == "3:7:7"
    store.close()


def test_a_batch_commits_once_and_never_reports_a_write_it_lost(url, sealer, pg_server):
    """Auth's stretch of v2 answers (store.batch): one commit at the end. A write that failed inside
    it (its error caught by the caller) or a connection lost inside it fails the whole batch, which
    then wrote nothing; PostgreSQL would otherwise turn the COMMIT into a silent ROLLBACK."""
    store, other = PostgresKeyStore(url, sealer), PostgresKeyStore(url, sealer)
    with store.batch():
        assert store.advance_v2_window("k1", "dev", "1:1:0", "0:0:0")
        assert store.advance_v2_window("k2", "dev", "1:1:0", "0:0:0")
        assert other.v2_window("k1") is None  # not before the commit
    assert other.v2_window("k1") == other.v2_window("k2") == "1:1:0"

    with pytest.raises(KeyStoreError), store.batch():
        assert store.advance_v2_window("k1", "dev", "2:3:0", "1:1:0")
        with pytest.raises(psycopg.Error):  # a failing statement, caught as auth catches one request's
            store._write_one("INSERT INTO no_such_table VALUES (1)", ())
    assert other.v2_window("k1") == "1:1:0"

    with pytest.raises(psycopg.OperationalError), store.batch():
        assert store.advance_v2_window("k1", "dev", "2:3:0", "1:1:0")
        with psycopg.connect(pg_server.url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (store._db.info.backend_pid,))
        store.advance_v2_window("k2", "dev", "2:3:0", "1:1:0")
    assert other.v2_window("k1") == other.v2_window("k2") == "1:1:0"
    with store.batch():  # the next batch begins on a fresh connection
        assert store.advance_v2_window("k1", "dev", "2:3:0", "1:1:0")
    assert other.v2_window("k1") == "2:3:0"
    with psycopg.connect(pg_server.url(), autocommit=True) as admin:  # dropped between batches
        admin.execute("SELECT pg_terminate_backend(%s)", (store._db.info.backend_pid,))
    with store.batch():  # found dead at the batch's first write: begun again on a fresh one
        assert store.advance_v2_window("k1", "dev", "3:7:0", "2:3:0")
    assert other.v2_window("k1") == "3:7:0"
    store.close()
    other.close()


def test_no_secret_reaches_the_database(url, sealer, pg_server):
    store = PostgresKeyStore(url, sealer)
    secret = make_secret("v1")
    store.add(NewDevice("pico-1", "v1", secret))
    schema = url.rsplit("%3D", 1)[1]
    with psycopg.connect(pg_server.url(), autocommit=True) as db:
        dump = repr(db.execute(f"SELECT * FROM {schema}.credentials").fetchall())
        dump += repr(db.execute(f"SELECT * FROM {schema}.audit").fetchall())
    assert secret["key"] not in dump and secret["iv"] not in dump
    store.close()


def test_bad_urls_are_clear_errors_without_the_password(tmp_path, pg_server):
    wrong = pg_server.url().replace(pg_server.password, "not-the-password")
    with pytest.raises(KeyStoreError) as err:
        PostgresKeyStore(wrong, Sealer(os.urandom(32)))
    assert "not-the-password" not in str(err.value) and f":{pg_server.port}" in str(err.value)
    assert describe_url(wrong) == f"127.0.0.1:{pg_server.port}/postgres"
    config = Config(home=tmp_path, keystore_url="mysql://x@y/z")
    with pytest.raises(KeyStoreError, match="postgresql://"):
        open_store(config)


def test_an_older_database_is_migrated(url, sealer):
    """A store from before change stamps and stations: the one migration path brings it up to date."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema', '1'), ('generation', '7')")
        db.execute("CREATE TABLE devices (id TEXT PRIMARY KEY, protocol TEXT NOT NULL,"
                   " created_at DOUBLE PRECISION NOT NULL, revoked_at DOUBLE PRECISION,"
                   " last_seen DOUBLE PRECISION, readings BIGINT NOT NULL DEFAULT 0,"
                   " rejected BIGINT NOT NULL DEFAULT 0, connections BIGINT NOT NULL DEFAULT 0)")
    store = PostgresKeyStore(url, sealer)
    store.add(NewDevice("pico-1", "v1", make_secret("v1")))
    creds, mark = store.credentials_changed("v1", 7)
    assert [c.device_id for c in creds] == ["pico-1"] and mark == 8
    assert store.add_station("s1", "pem", "SHA256:aa").id == "s1"
    store.close()


def test_a_hanging_server_holds_no_caller_and_the_store_is_back_soon_after_it(url, sealer, pg_server,
                                                                           monkeypatch):
    """A reconnect that hangs (a restarted container's name lookup takes 5-20 s) holds one caller
    for RECONNECT_WAIT and the others not at all: auth answers every device from one loop. The
    store is back about RETRY_AFTER after the server, while the hung attempts still hang."""
    monkeypatch.setattr(postgres, "CONNECT_TIMEOUT", 30)  # the hang outlasts the test
    relay = Relay(pg_server.port)
    try:
        store = PostgresKeyStore(url.replace(f":{pg_server.port}/", f":{relay.port}/"), sealer)
        store.add(NewDevice("pico-1", "v1", make_secret("v1")))
        relay.holding = True
        relay.cut()
        began = time.monotonic()
        for _ in range(50):
            with pytest.raises(KeyStoreError):
                store.list()
        assert time.monotonic() - began < 2, "callers waited on the hanging reconnect"
        relay.holding = False
        back = time.monotonic()
        assert [d.id for d in wait_until(store.list, 10, what="the store back")] == ["pico-1"]
        assert time.monotonic() - back < 5
        store.save_v2_window("kid", "pico-1", "3:7:7")
        assert store.v2_window("kid") == "3:7:7"
        store.close()
    finally:
        relay.close()
