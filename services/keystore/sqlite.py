"""The SQLite key store: the state dir's keys.db, the default backend.

Several processes (auth, keyadmin) share the file; writers are serialised by
BEGIN IMMEDIATE, and `generation()` sees other processes' commits cheaply.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.config import Config
from services.common.state import check_private
from services.keystore.sealing import Sealer
from services.keystore.sql import SQLKeyStoreBase

_TRIGGERS = (
    """CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
)


def _create_private(path: Path) -> None:
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    check_private(path)


class SQLiteKeyStore(SQLKeyStoreBase):
    """The SQLite key store. Thread-safe (one connection behind a lock); several processes share the file."""

    _TRIGGERS = _TRIGGERS

    def __init__(self, path: Path, sealer: Sealer, clock: Callable[[], float] = time.time) -> None:
        _create_private(path)
        super().__init__(sealer, clock)
        self._path = path
        self._db = sqlite3.connect(path, timeout=10, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout = 10000")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        self._migrate()
        # WAL and SHM files are created next to the database; keep them private too.
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                os.chmod(side, 0o600)

    @classmethod
    def open(cls, config: Config) -> SQLiteKeyStore:
        """Open the store of a state directory; refuses key files wider than 0600 (StateError)."""
        if config.keystore_path.exists():
            check_private(config.keystore_path)
        return cls(config.keystore_path, Sealer.from_file(config.master_key_path))

    def _tx(self) -> _Tx:
        # Inside an open batch a transaction is a savepoint of it: the audit entry of a burst of
        # failures, say, is written (or rolled back) whole and committed with the batch.
        return _Tx(self._db, self._lock, nested=self._batch == "open")

    def _commit_batch(self) -> None:
        self._db.execute("COMMIT")

    def _rollback_batch(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

    def generation(self) -> int:
        """Changes whenever another connection (process) commits: cheap change detection."""
        with self._lock:
            return self._db.execute("PRAGMA data_version").fetchone()[0]

    def _write_one(self, sql: str, args: tuple) -> int:
        with self._lock:
            self._begin_if_wanted()
            return self._x(sql, args).rowcount

    def _read_locked(self, sql: str, args: tuple) -> list[tuple]:
        with self._lock:
            self._begin_if_wanted()  # IMMEDIATE: the database's write lock, held to the commit
            return self._x(sql, args).fetchall()

    def _begin_if_wanted(self) -> None:
        if self._batch == "wanted":
            self._db.execute("BEGIN IMMEDIATE")
            self._batch = "open"


@dataclass
class _Tx:
    """A write transaction, under the store's lock: BEGIN IMMEDIATE ... COMMIT, or, nested in an open
    batch, a savepoint of it (released into the batch, or rolled back alone)."""

    db: sqlite3.Connection
    lock: threading.RLock
    nested: bool = False

    def __enter__(self) -> None:
        self.lock.acquire()
        try:
            self.db.execute("SAVEPOINT nested" if self.nested else "BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if not self.nested:
                self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
                return
            if exc_type is not None:
                self.db.execute("ROLLBACK TO nested")
            self.db.execute("RELEASE nested")
        finally:
            self.lock.release()
