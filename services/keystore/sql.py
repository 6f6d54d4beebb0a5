"""The key store: devices, their sealed credentials, counters and the audit log.

`KeyStore` is the interface the auth service and the key-admin API use;
`SQLKeyStoreBase` holds the logic both SQL backends share; `SQLiteKeyStore` is
the implementation at `config.keystore_path` (PostgreSQL: keystore_pg.py).
Secrets are sealed (services/auth/sealing.py) before they reach the database
and unsealed only in memory.

Rotation keeps several credentials per device (generations): the newest is
current; an older one stays valid until its `expires_at` (end of the grace
period), which is cut short when the device first uses the newer one.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from services.auth.credentials import KINDS
from services.auth.sealing import Sealer
from services.common.config import Config
from services.common.state import check_private

SCHEMA_VERSION = 1
GENESIS = "0" * 64


class KeyStoreError(Exception):
    """Base of the store's errors; `device` names the device concerned, if any."""

    def __init__(self, message: str, device: str | None = None) -> None:
        super().__init__(message)
        self.device = device


class DeviceExists(KeyStoreError):
    pass


class DeviceNotFound(KeyStoreError):
    pass


class DeviceRevoked(KeyStoreError):
    pass


class CredentialsInUse(KeyStoreError):
    """Another device holds the same credentials: identification would be ambiguous."""


@dataclass(frozen=True)
class CredentialInfo:
    generation: int
    created_at: float
    expires_at: float | None
    confirmed_at: float | None

    def state(self, now: float) -> str:
        if self.expires_at is None:
            return "current"
        return "previous" if self.expires_at > now else "expired"


@dataclass(frozen=True)
class Device:
    id: str
    protocol: str
    created_at: float
    revoked_at: float | None
    last_seen: float | None
    readings: int
    rejected: int
    connections: int
    credentials: tuple[CredentialInfo, ...] = ()

    def state(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if self.revoked_at is not None:
            return "revoked"
        if any(c.state(now) == "previous" for c in self.credentials):
            return "rotating"
        return "active"

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        """The public view: state and counters, never a secret."""
        now = time.time() if now is None else now
        return {
            "id": self.id,
            "protocol": self.protocol,
            "state": self.state(now),
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
            "last_seen": self.last_seen,
            "readings": self.readings,
            "rejected": self.rejected,
            "connections": self.connections,
            "credentials": [
                {"generation": c.generation, "state": c.state(now), "created_at": c.created_at,
                 "expires_at": c.expires_at, "confirmed_at": c.confirmed_at}
                for c in self.credentials
            ],
        }


@dataclass(frozen=True)
class Credential:
    """One unsealed credential, for the auth service only."""

    device_id: str
    protocol: str
    generation: int
    secret: dict[str, str]
    expires_at: float | None  # None: the current credential
    revoked: bool

    def valid(self, now: float) -> bool:
        return not self.revoked and (self.expires_at is None or self.expires_at > now)


@dataclass
class Seen:
    """Counters the auth service accumulates and flushes in batches."""

    last_seen: float = 0.0
    readings: int = 0
    rejected: int = 0
    connections: int = 0

    def merge(self, other: Seen) -> None:
        self.last_seen = max(self.last_seen, other.last_seen)
        self.readings += other.readings
        self.rejected += other.rejected
        self.connections += other.connections


@dataclass(frozen=True)
class NewDevice:
    id: str
    protocol: str
    secret: dict[str, str]


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    ts: float
    actor: str
    action: str
    device: str | None
    detail: dict[str, Any]
    prev: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts, "actor": self.actor, "action": self.action,
                "device": self.device, "detail": self.detail, "prev": self.prev, "hash": self.hash}


def audit_hash(prev: str, seq: int, ts: float, actor: str, action: str, device: str | None,
               detail: dict[str, Any]) -> str:
    """Each entry's hash covers its fields and the previous hash: editing any entry breaks the chain."""
    body = json.dumps([seq, repr(ts), actor, action, device, detail], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((prev + "\n" + body).encode()).hexdigest()


def verify_chain(entries: Iterable[AuditEntry]) -> AuditEntry | None:
    """Return the first entry whose link is broken (edited, removed before it, reordered), or None."""
    prev = GENESIS
    expected_seq = None
    for entry in entries:
        if expected_seq is not None and entry.seq != expected_seq:
            return entry
        if entry.prev != prev or audit_hash(prev, entry.seq, entry.ts, entry.actor, entry.action,
                                            entry.device, entry.detail) != entry.hash:
            return entry
        prev = entry.hash
        expected_seq = entry.seq + 1
    return None


class KeyStore(Protocol):
    """What the auth service and the key-admin API need from a key store backend."""

    def add(self, device: NewDevice, actor: str = "admin") -> Device: ...
    def get(self, device_id: str) -> Device | None: ...
    def list(self) -> list[Device]: ...
    def revoke(self, device_id: str, actor: str = "admin") -> Device: ...
    def import_many(self, devices: list[NewDevice], actor: str = "admin") -> list[Device]: ...
    def rotate(
        self, device_id: str, secret: dict[str, str], grace: float, actor: str = "admin"
    ) -> Device: ...
    def confirm(self, device_id: str, generation: int) -> None: ...
    def credentials(self, protocol: str) -> list[Credential]: ...
    def record_seen(self, batch: dict[str, Seen]) -> None: ...
    def generation(self) -> int: ...
    def v2_window(self, key_id: str) -> str | None: ...
    def save_v2_window(self, key_id: str, device_id: str, window: str) -> None: ...
    def advance_v2_window(self, key_id: str, device_id: str, window: str, seq: int) -> bool: ...
    def append_audit(
        self, actor: str, action: str, device: str | None, detail: dict[str, Any]
    ) -> AuditEntry: ...
    def audit(self, after: int = 0, limit: int = 1000) -> list[AuditEntry]: ...
    def audit_head(self) -> tuple[int, str] | None: ...
    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    protocol TEXT NOT NULL CHECK (protocol IN ('v1', 'v2')),
    created_at REAL NOT NULL,
    revoked_at REAL,
    last_seen REAL,
    readings INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    connections INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS credentials (
    device_id TEXT NOT NULL REFERENCES devices(id),
    generation INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    fingerprint TEXT NOT NULL,
    key_id TEXT,
    created_at REAL NOT NULL,
    expires_at REAL,
    confirmed_at REAL,
    PRIMARY KEY (device_id, generation)
);
CREATE INDEX IF NOT EXISTS credentials_fingerprint ON credentials(fingerprint);
CREATE INDEX IF NOT EXISTS credentials_key_id ON credentials(key_id);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    device TEXT,
    detail TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS v2_windows (
    key_id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    window TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


def _create_private(path: Path) -> None:
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    check_private(path)


class SQLKeyStoreBase:
    """The store's logic, shared by the SQLite and PostgreSQL backends.

    Statements are written once, with `?` placeholders and SQL both dialects accept; a subclass
    supplies the connection (`_db`), write transactions (`_tx`), the schema, `generation()`,
    `_write_one()` and the few class attributes below. Thread-safe: one connection behind a lock.
    """

    _CHANGES = "changes"  # the meta row holding the change counter
    _GREATEST = "MAX"  # the two-argument maximum
    _BY_ID = "id"  # how devices are ordered (the same order on every backend)
    # The `last` of a stored v2 window ("last:verified:acked") as an integer; {} is the column.
    _WINDOW_LAST = "CAST(substr({0}, 1, instr({0}, ':') - 1) AS INTEGER)"

    _db: Any

    def __init__(self, sealer: Sealer, clock: Callable[[], float]) -> None:
        self._sealer = sealer
        self._clock = clock
        self._lock = threading.RLock()
        self._unsealed: dict[tuple[str, int], dict[str, str]] = {}

    # --- the dialect ---
    def _tx(self) -> AbstractContextManager[None]:
        """A write transaction, serialised with every other writer of the database."""
        raise NotImplementedError

    def generation(self) -> int:
        raise NotImplementedError

    def _write_one(self, sql: str, args: tuple) -> int:
        """Run one idempotent write statement on its own (autocommit); the rows it changed."""
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        """`sql` in the driver's placeholder style."""
        return sql

    def _x(self, sql: str, args: tuple = ()) -> Any:
        """Run one statement on the current connection (inside a transaction for writes)."""
        return self._db.execute(self._sql(sql), args)

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        """A read outside any write transaction."""
        with self._lock:
            return self._x(sql, args).fetchall()

    # --- reads ---
    def _device_rows(self, where: str = "", args: tuple = ()) -> list[Device]:
        rows = self._read(
            "SELECT id, protocol, created_at, revoked_at, last_seen, readings, rejected, connections"
            f" FROM devices {where} ORDER BY {self._BY_ID}", args)
        creds: dict[str, list[CredentialInfo]] = {}
        cred_sql = "SELECT device_id, generation, created_at, expires_at, confirmed_at FROM credentials"
        if where:
            cred_sql += " WHERE device_id IN (SELECT id FROM devices " + where + ")"
        cred_sql += " ORDER BY generation"
        for dev, gen, created, expires, confirmed in self._read(cred_sql, args):
            creds.setdefault(dev, []).append(CredentialInfo(gen, created, expires, confirmed))
        return [Device(*row, credentials=tuple(creds.get(row[0], ()))) for row in rows]

    def get(self, device_id: str) -> Device | None:
        with self._lock:
            found = self._device_rows("WHERE id = ?", (device_id,))
        return found[0] if found else None

    def list(self) -> list[Device]:
        with self._lock:
            return self._device_rows()

    def credentials(self, protocol: str) -> list[Credential]:
        """Every credential of `protocol` (also revoked and expired ones, flagged), unsealed."""
        return self.credentials_changed(protocol, -1)[0]

    def credentials_changed(self, protocol: str, since: int) -> tuple[list[Credential], int]:
        """All credentials of the devices changed after change number `since`, and the current number.

        The number is read first: a change committed after it shows up now and again next time
        (harmless), and none committed before it can be missed (writers commit in number order)."""
        with self._lock:
            current = self._current_change()
            rows = self._read(
                "SELECT c.device_id, c.generation, c.sealed, c.expires_at, d.revoked_at"
                " FROM credentials c JOIN devices d ON d.id = c.device_id WHERE d.protocol = ?"
                " AND d.changed > ?", (protocol, since))
            out = []
            for device_id, gen, sealed, expires, revoked in rows:
                secret = self._unsealed.get((device_id, gen))
                if secret is None:
                    # bytes(): psycopg hands BYTEA back as a memoryview.
                    secret = self._sealer.unseal(device_id, protocol, bytes(sealed))
                    self._unsealed[(device_id, gen)] = secret
                out.append(Credential(device_id, protocol, gen, secret, expires, revoked is not None))
            return out, current

    def _current_change(self) -> int:
        return int(self._read("SELECT value FROM meta WHERE name = ?", (self._CHANGES,))[0][0])

    def _next_change(self) -> int:
        """Inside a write transaction: the number that stamps the devices this write changes."""
        # meta.value is TEXT; these CASTs mean the same in SQLite and PostgreSQL.
        self._x("UPDATE meta SET value = CAST(CAST(value AS BIGINT) + 1 AS TEXT) WHERE name = ?",
                (self._CHANGES,))
        return int(self._x("SELECT value FROM meta WHERE name = ?", (self._CHANGES,)).fetchone()[0])

    def _stamp(self, device_id: str) -> None:
        self._x("UPDATE devices SET changed = ? WHERE id = ?", (self._next_change(), device_id))

    # --- writes ---
    def _insert_credential(self, device_id: str, protocol: str, generation: int, secret: dict[str, str],
                           now: float) -> None:
        kind = KINDS[protocol]
        fingerprint = self._sealer.fingerprint(protocol, kind.material(secret))
        clash = self._x(
            "SELECT c.device_id FROM credentials c JOIN devices d ON d.id = c.device_id"
            " WHERE c.fingerprint = ? AND d.revoked_at IS NULL AND (c.expires_at IS NULL OR c.expires_at > ?)"
            " AND c.device_id != ?", (fingerprint, now, device_id)).fetchone()
        key_id = kind.key_id(secret)
        if clash is None and key_id is not None:
            clash = self._x("SELECT device_id FROM credentials WHERE key_id = ?", (key_id,)).fetchone()
        if clash is not None:
            raise CredentialsInUse("these credentials are already registered to another device", device_id)
        self._x(
            "INSERT INTO credentials(device_id, generation, sealed, fingerprint, key_id, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (device_id, generation, self._sealer.seal(device_id, protocol, secret), fingerprint, key_id, now))

    def _add(self, device: NewDevice, now: float, change: int) -> None:
        existing = self._x("SELECT revoked_at FROM devices WHERE id = ?", (device.id,)).fetchone()
        if existing is not None:
            state = " (revoked)" if existing[0] is not None else ""
            raise DeviceExists(f"device {device.id} already exists{state}", device.id)
        self._x("INSERT INTO devices(id, protocol, created_at, changed) VALUES (?, ?, ?, ?)",
                (device.id, device.protocol, now, change))
        self._insert_credential(device.id, device.protocol, 1, device.secret, now)

    def add(self, device: NewDevice, actor: str = "admin") -> Device:
        now = self._clock()
        with self._tx():
            self._add(device, now, self._next_change())
            self._append_audit(actor, "added", device.id, {"protocol": device.protocol}, now)
        return self._must_get(device.id)

    def import_many(self, devices: list[NewDevice], actor: str = "admin") -> list[Device]:
        """All or nothing: one clash (existing id, shared credentials) imports none."""
        now = self._clock()
        with self._tx():
            change = self._next_change()
            for device in devices:
                self._add(device, now, change)
            self._append_audit(actor, "imported", None, {"count": len(devices),
                                                         "devices": [d.id for d in devices][:1000]}, now)
        found = {d.id: d for d in self.list()}
        return [found[d.id] for d in devices]

    def revoke(self, device_id: str, actor: str = "admin") -> Device:
        now = self._clock()
        with self._tx():
            row = self._x("SELECT revoked_at FROM devices WHERE id = ?", (device_id,)).fetchone()
            if row is None:
                raise DeviceNotFound(f"no device {device_id}", device_id)
            if row[0] is not None:
                raise DeviceRevoked(f"device {device_id} is already revoked", device_id)
            self._x("UPDATE devices SET revoked_at = ? WHERE id = ?", (now, device_id))
            self._stamp(device_id)
            self._append_audit(actor, "revoked", device_id, {}, now)
        return self._must_get(device_id)

    def rotate(self, device_id: str, secret: dict[str, str], grace: float, actor: str = "admin") -> Device:
        """New current credentials; the previous current ones stay valid for `grace` seconds."""
        now = self._clock()
        with self._tx():
            row = self._x("SELECT protocol, revoked_at FROM devices WHERE id = ?", (device_id,)).fetchone()
            if row is None:
                raise DeviceNotFound(f"no device {device_id}", device_id)
            protocol, revoked = row
            if revoked is not None:
                raise DeviceRevoked(f"device {device_id} is revoked", device_id)
            (top,) = self._x("SELECT MAX(generation) FROM credentials WHERE device_id = ?",
                             (device_id,)).fetchone()
            # Only the credential current until now gets the overlap; older ones end at once.
            self._x("UPDATE credentials SET expires_at = ? WHERE device_id = ? AND generation < ?"
                    " AND (expires_at IS NULL OR expires_at > ?)", (now, device_id, top, now))
            self._x("UPDATE credentials SET expires_at = ? WHERE device_id = ? AND generation = ?",
                    (now + grace, device_id, top))
            self._insert_credential(device_id, protocol, top + 1, secret, now)
            self._stamp(device_id)
            self._append_audit(actor, "rotated", device_id, {"generation": top + 1, "grace": grace}, now)
        return self._must_get(device_id)

    def confirm(self, device_id: str, generation: int) -> None:
        """The device used credential `generation`: the overlap of older ones ends now."""
        now = self._clock()
        with self._tx():
            changed = self._x(
                "UPDATE credentials SET confirmed_at = ? WHERE device_id = ? AND generation = ?"
                " AND confirmed_at IS NULL", (now, device_id, generation)).rowcount
            ended = self._x(
                "UPDATE credentials SET expires_at = ? WHERE device_id = ? AND generation < ?"
                " AND (expires_at IS NULL OR expires_at > ?)", (now, device_id, generation, now)).rowcount
            if changed or ended:
                self._stamp(device_id)
            if changed and ended:
                self._append_audit("auth", "rotation_confirmed", device_id, {"generation": generation}, now)

    def record_seen(self, batch: dict[str, Seen]) -> None:
        """Counters only: no change stamp (auth caches need no reload for them)."""
        if not batch:
            return
        # A cursor: psycopg's connection has no executemany; closing(): sqlite3's cursor is no context.
        with self._tx(), contextlib.closing(self._db.cursor()) as cur:
            cur.executemany(self._sql(
                f"UPDATE devices SET last_seen = {self._GREATEST}(COALESCE(last_seen, 0), ?),"
                " readings = readings + ?, rejected = rejected + ?, connections = connections + ?"
                " WHERE id = ?"),
                [(s.last_seen, s.readings, s.rejected, s.connections, d) for d, s in batch.items()])

    # --- protocol v2 replay windows (services/common/v2.py ReplayWindow, as text) ---
    def v2_window(self, key_id: str) -> str | None:
        # "window" quoted: a reserved word in PostgreSQL.
        rows = self._read('SELECT "window" FROM v2_windows WHERE key_id = ?', (key_id,))
        return rows[0][0] if rows else None

    def _window_upsert(self, condition: str) -> str:
        """Insert a window, or replace the stored one when its `last` satisfies `condition`."""
        stored = self._WINDOW_LAST.format('v2_windows."window"')
        return ('INSERT INTO v2_windows(key_id, device_id, "window") VALUES (?, ?, ?)'
                ' ON CONFLICT (key_id) DO UPDATE SET "window" = excluded."window"'
                f" WHERE {stored} {condition}")

    def save_v2_window(self, key_id: str, device_id: str, window: str) -> None:
        """Ack-bit flushes (and any other rewrite of a window already accepted).

        Never moves a window back ("last:verified:acked", last first): with several auth
        instances, one that served a device earlier may flush its older copy after another
        instance saved a newer one; the newer one stays. An equal `last` is written (more ack
        bits); accepting a new seq goes through `advance_v2_window`, never through here."""
        new_last = self._WINDOW_LAST.format('excluded."window"')
        self._write_one(self._window_upsert(f"<= {new_last}"), (key_id, device_id, window))

    def advance_v2_window(self, key_id: str, device_id: str, window: str, seq: int) -> bool:
        """Accept `seq`: store `window` (whose last is `seq`) only if the stored last is below `seq`.

        One atomic compare-and-set, written before auth answers (a restarted auth never accepts
        a seq twice). False when the stored window already reached `seq` (another auth instance
        accepted it, or a later one): the caller must reload the window, never accept again."""
        return self._write_one(self._window_upsert("< ?"), (key_id, device_id, window, seq)) > 0

    # --- audit ---
    def _append_audit(self, actor: str, action: str, device: str | None, detail: dict[str, Any],
                      now: float) -> AuditEntry:
        last = self._x("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
        digest = audit_hash(prev, seq, now, actor, action, device, detail)
        self._x("INSERT INTO audit(seq, ts, actor, action, device, detail, prev, hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, now, actor, action, device, json.dumps(detail, sort_keys=True), prev, digest))
        return AuditEntry(seq, now, actor, action, device, detail, prev, digest)

    def append_audit(self, actor: str, action: str, device: str | None, detail: dict[str, Any]) -> AuditEntry:
        with self._tx():
            return self._append_audit(actor, action, device, detail, self._clock())

    def audit_head(self) -> tuple[int, str] | None:
        """(seq, hash) of the newest entry; None while the log is empty."""
        rows = self._read("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    def audit(self, after: int = 0, limit: int = 1000) -> list[AuditEntry]:
        rows = self._read(
            "SELECT seq, ts, actor, action, device, detail, prev, hash FROM audit WHERE seq > ?"
            " ORDER BY seq LIMIT ?", (after, limit))
        return [AuditEntry(seq, ts, actor, action, device, _loads(detail), prev, digest)
                for seq, ts, actor, action, device, detail, prev, digest in rows]

    # --- misc ---
    def _must_get(self, device_id: str) -> Device:
        device = self.get(device_id)
        assert device is not None
        return device

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SQLiteKeyStore(SQLKeyStoreBase):
    """The SQLite key store. Thread-safe (one connection behind a lock); several processes share the file."""

    def __init__(self, path: Path, sealer: Sealer, clock: Callable[[], float] = time.time) -> None:
        _create_private(path)
        super().__init__(sealer, clock)
        self._path = path
        self._db = sqlite3.connect(path, timeout=10, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout = 10000")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        with self._tx():
            for stmt in _split(_SCHEMA):
                self._db.execute(stmt)
            self._db.execute("INSERT OR IGNORE INTO meta(name, value) VALUES ('schema', ?)",
                             (str(SCHEMA_VERSION),))
            # Change counter: every write that matters to auth stamps the device, so auth reloads
            # only the devices changed since its last look (not 10,000 keys per added device).
            self._db.execute("INSERT OR IGNORE INTO meta(name, value) VALUES ('changes', '0')")
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(devices)")}
            if "changed" not in columns:
                self._db.execute("ALTER TABLE devices ADD COLUMN changed INTEGER NOT NULL DEFAULT 0")
            self._db.execute("CREATE INDEX IF NOT EXISTS devices_changed ON devices(changed)")
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
        return _Tx(self._db, self._lock)

    def generation(self) -> int:
        """Changes whenever another connection (process) commits: cheap change detection."""
        with self._lock:
            return self._db.execute("PRAGMA data_version").fetchone()[0]

    def _write_one(self, sql: str, args: tuple) -> int:
        with self._lock:
            return self._x(sql, args).rowcount


def _loads(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"unparsable": text}
    return value if isinstance(value, dict) else {"value": value}


def _split(script: str) -> list[str]:
    """Split the schema into statements (triggers contain ';' inside BEGIN ... END)."""
    out, buf = [], ""
    for line in script.strip().splitlines():
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out


@dataclass
class _Tx:
    db: sqlite3.Connection
    lock: threading.RLock

    def __enter__(self) -> None:
        self.lock.acquire()
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self.lock.release()


def open_configured(config: Config) -> KeyStore:
    """The store MEDSEC_KEYSTORE_URL names: the state dir's SQLite file by default, else PostgreSQL.

    The PostgreSQL backend (and its driver) is imported only when configured.
    """
    if not config.keystore_url:
        return SQLiteKeyStore.open(config)
    from services.auth.keystore_pg import open_store

    return open_store(config)

