"""The key store on PostgreSQL, for several machines sharing one store (MEDSEC_KEYSTORE_URL).

Same interface, behaviour and logic as `SQLiteKeyStore` (sqlite.py), which stays
the default: both are `SQLKeyStoreBase` (sql.py) on the one schema (schema.py);
this module adds only the connection, transactions and dialect details.
Secrets are sealed with the state dir's master key before they reach the server
(the database never sees a device key; every gateway machine needs the same
master.key), an append-only audit chain enforced by triggers, rotation
generations, v2 replay windows, dispatch stations.

Concurrency: every writing transaction first takes one advisory lock, so
writers are serialised as SQLite's BEGIN IMMEDIATE serialises them (the
credential-clash check and the audit chain need it). `generation()` is a
counter in `meta`, advanced by every change that matters to the auth cache
(devices and credentials), which also stamps the changed devices: auth
instances on other machines reload only those (`credentials_changed`).
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import psycopg
from psycopg.pq import TransactionStatus

from services.common import pg
from services.common.config import Config
from services.common.pg import describe_url
from services.keystore import schema
from services.keystore.models import KeyStoreError
from services.keystore.reconnect import Reconnector
from services.keystore.sealing import Sealer
from services.keystore.sql import SQLKeyStoreBase

# pg_advisory_xact_lock key: "medsec" in ASCII, one lock for all writers of this database.
_WRITE_LOCK = 0x6D6564736563
# Reconnects run in the background (reconnect.py): a caller waits at most RECONNECT_WAIT s, and a
# server that is away is asked again every RETRY_AFTER s.
CONNECT_TIMEOUT = 3
RECONNECT_WAIT = 0.2
RETRY_AFTER = 1.0

_TRIGGERS = (
    """CREATE OR REPLACE FUNCTION medsec_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$""",
    """CREATE OR REPLACE TRIGGER audit_no_update BEFORE UPDATE ON audit
        FOR EACH ROW EXECUTE FUNCTION medsec_audit_append_only()""",
    """CREATE OR REPLACE TRIGGER audit_no_delete BEFORE DELETE ON audit
        FOR EACH ROW EXECUTE FUNCTION medsec_audit_append_only()""",
    """CREATE OR REPLACE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
        FOR EACH STATEMENT EXECUTE FUNCTION medsec_audit_append_only()""",
)


class PostgresKeyStore(SQLKeyStoreBase):
    """The key store on PostgreSQL; thread-safe (one connection behind a lock), reconnects once."""

    _CHANGES = "generation"
    _GREATEST = "GREATEST"
    _BY_ID = 'id COLLATE "C"'  # byte order, as SQLite sorts: not the server's locale
    _TYPES = schema.POSTGRES_TYPES
    _TRIGGERS = _TRIGGERS

    def __init__(self, url: str, sealer: Sealer, clock: Callable[[], float] = time.time) -> None:
        super().__init__(sealer, clock)
        self._url = url
        self._db = self._connect()  # at start, in the open: a wrong URL or password fails here
        self._reconnector = Reconnector(self._connect, wait=RECONNECT_WAIT, every=RETRY_AFTER)
        self._migrate()

    @classmethod
    def open(cls, config: Config) -> PostgresKeyStore:
        return cls(config.keystore_url, Sealer.from_file(config.master_key_path))

    def _connect(self) -> psycopg.Connection:
        try:
            return pg.connect(self._url, CONNECT_TIMEOUT, autocommit=True)
        except psycopg.Error as exc:
            # psycopg's message names host and port, never the password.
            raise KeyStoreError(f"cannot connect to the key store at {describe_url(self._url)}: "
                                f"{str(exc).strip().splitlines()[0]}") from None

    def _reconnect(self) -> None:
        """Replace the dead connection (KeyStoreError while the server or its name is away)."""
        with contextlib.suppress(psycopg.Error):
            self._db.close()
        self._db = self._reconnector.connection()

    def close(self) -> None:
        self._reconnector.close()
        super().close()

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s")

    # --- transactions ---
    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """A write transaction, serialised with every other writer of the database; inside an
        open batch, a savepoint of it (psycopg nests transaction() that way)."""
        with self._lock:
            if self._batch != "open":
                self._ensure()
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
                yield

    def _check_batch(self) -> None:
        # PostgreSQL turns the COMMIT of a transaction with a failed statement (one a caller caught:
        # auth answers each request for itself) into a silent ROLLBACK: refuse it instead.
        if self._db.info.transaction_status != TransactionStatus.INTRANS:
            raise KeyStoreError("a write of the batch failed; nothing of it was written")

    def _commit_batch(self) -> None:
        self._check_batch()
        self._db.execute("COMMIT")

    def _rollback_batch(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._db.execute("ROLLBACK")

    def _begin_with(self, sql: str, args: tuple) -> psycopg.Cursor:
        """Begin the batch's transaction with its first statement, in one round trip (a pipeline);
        on a connection found dead, once more on a fresh one: nothing of the batch exists yet."""
        self._batch = "open"
        try:
            return self._pipelined(("BEGIN", ()), (sql, args))
        except psycopg.OperationalError:
            self._reconnect()
            return self._pipelined(("BEGIN", ()), (sql, args))

    def _pipelined(self, *statements: tuple[str, tuple]) -> psycopg.Cursor:
        """Send the statements without waiting for each answer; the last one's cursor."""
        with self._db.pipeline():
            cursors = [self._db.execute(sql, args) for sql, args in statements]
        return cursors[-1]

    def _read_locked(self, sql: str, args: tuple) -> list[tuple]:
        sql = self._sql(sql) + " FOR UPDATE"
        with self._lock:
            if self._batch == "open":
                return self._db.execute(sql, args).fetchall()  # no retry: the batch fails whole
            if self._db.closed or self._db.broken:
                self._reconnect()
            return self._begin_with(sql, args).fetchall()

    def _ensure(self) -> None:
        """A live connection before a write: the server may have restarted since the last one."""
        if not (self._db.closed or self._db.broken):
            try:
                self._db.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                pass
        self._reconnect()

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return super()._read(sql, args)
            except psycopg.OperationalError:
                if self._batch == "open":
                    raise  # the batch's transaction went with the connection: the batch fails
                # The server restarted or the connection dropped: one fresh try.
                self._reconnect()
                return super()._read(sql, args)

    def generation(self) -> int:
        """Changes whenever any instance changes devices or credentials: cheap change detection."""
        return self._current_change()

    def _write_one(self, sql: str, args: tuple) -> int:
        """One statement (the v2 window writes auth makes before answering): in the open batch,
        or outside any transaction."""
        sql = self._sql(sql)
        with self._lock:
            if self._batch == "open":
                return self._db.execute(sql, args).rowcount  # no retry: the batch fails whole
            if self._db.closed or self._db.broken:
                self._reconnect()
            if self._batch == "wanted":
                return self._begin_with(sql, args).rowcount
            try:
                return self._db.execute(sql, args).rowcount
            except psycopg.OperationalError:
                # One statement, idempotent: safe to send again on a fresh connection. (A
                # compare-and-set that committed before the connection dropped then reports a
                # loss: auth reloads the window and answers a redelivery, never a second accept.)
                self._reconnect()
                return self._db.execute(sql, args).rowcount
