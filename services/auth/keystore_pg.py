"""The key store on PostgreSQL, for several machines sharing one store (MEDSEC_KEYSTORE_URL).

Same interface and behaviour as `SQLiteKeyStore` (services/auth/keystore.py),
which stays the default: secrets sealed with the state dir's master key before
they reach the server (the database never sees a device key; every gateway
machine needs the same master.key), an append-only audit chain enforced by
triggers, rotation generations, v2 replay windows.

Concurrency: every writing transaction first takes one advisory lock, so
writers are serialised as SQLite's BEGIN IMMEDIATE serialises them (the
credential-clash check and the audit chain need it). `generation()` is a
counter in `meta`, advanced by every change that matters to the auth cache
(devices and credentials), which also stamps the changed devices: auth
instances on other machines reload only those (`credentials_changed`).

`open_store(config)` picks the backend from the config.
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg

from services.auth.credentials import KINDS
from services.auth.keystore import (
    GENESIS,
    SCHEMA_VERSION,
    AuditEntry,
    Credential,
    CredentialInfo,
    CredentialsInUse,
    Device,
    DeviceExists,
    DeviceNotFound,
    DeviceRevoked,
    KeyStore,
    KeyStoreError,
    NewDevice,
    Seen,
    SQLiteKeyStore,
    audit_hash,
)
from services.auth.sealing import Sealer
from services.common.config import Config

# pg_advisory_xact_lock key: "medsec" in ASCII, one lock for all writers of this database.
_WRITE_LOCK = 0x6D6564736563

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS devices (
        id TEXT PRIMARY KEY,
        protocol TEXT NOT NULL CHECK (protocol IN ('v1', 'v2')),
        created_at DOUBLE PRECISION NOT NULL,
        revoked_at DOUBLE PRECISION,
        last_seen DOUBLE PRECISION,
        readings BIGINT NOT NULL DEFAULT 0,
        rejected BIGINT NOT NULL DEFAULT 0,
        connections BIGINT NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS credentials (
        device_id TEXT NOT NULL REFERENCES devices(id),
        generation INTEGER NOT NULL,
        sealed BYTEA NOT NULL,
        fingerprint TEXT NOT NULL,
        key_id TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION,
        confirmed_at DOUBLE PRECISION,
        PRIMARY KEY (device_id, generation))""",
    # Change stamp: every write that matters to auth stamps its devices with the next number of the
    # 'generation' counter, so auth reloads only what changed (credentials_changed).
    "ALTER TABLE devices ADD COLUMN IF NOT EXISTS changed BIGINT NOT NULL DEFAULT 0",
    "CREATE INDEX IF NOT EXISTS devices_changed ON devices(changed)",
    "CREATE INDEX IF NOT EXISTS credentials_fingerprint ON credentials(fingerprint)",
    "CREATE INDEX IF NOT EXISTS credentials_key_id ON credentials(key_id)",
    """CREATE TABLE IF NOT EXISTS audit (
        seq BIGINT PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        device TEXT,
        detail TEXT NOT NULL,
        prev TEXT NOT NULL,
        hash TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS v2_windows (
        key_id TEXT PRIMARY KEY,
        device_id TEXT NOT NULL,
        "window" TEXT NOT NULL)""",
    """CREATE OR REPLACE FUNCTION medsec_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$""",
    """CREATE OR REPLACE TRIGGER audit_no_update BEFORE UPDATE ON audit
        FOR EACH ROW EXECUTE FUNCTION medsec_audit_append_only()""",
    """CREATE OR REPLACE TRIGGER audit_no_delete BEFORE DELETE ON audit
        FOR EACH ROW EXECUTE FUNCTION medsec_audit_append_only()""",
    """CREATE OR REPLACE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
        FOR EACH STATEMENT EXECUTE FUNCTION medsec_audit_append_only()""",
]


def describe_url(url: str) -> str:
    """host:port/dbname of a URL, for logs and errors: never the password."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"


class PostgresKeyStore:
    """The key store on PostgreSQL; thread-safe (one connection behind a lock), reconnects once."""

    def __init__(self, url: str, sealer: Sealer, clock: Callable[[], float] = time.time) -> None:
        self._url = url
        self._sealer = sealer
        self._clock = clock
        self._lock = threading.RLock()
        self._db = self._connect()
        with self._tx():
            for stmt in _SCHEMA:
                self._db.execute(stmt)
            self._db.execute("INSERT INTO meta(name, value) VALUES ('schema', %s), ('generation', '0')"
                             " ON CONFLICT (name) DO NOTHING", (str(SCHEMA_VERSION),))
        self._unsealed: dict[tuple[str, int], dict[str, str]] = {}

    @classmethod
    def open(cls, config: Config) -> PostgresKeyStore:
        return cls(config.keystore_url, Sealer.from_file(config.master_key_path))

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self._url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            # psycopg's message names host and port, never the password.
            raise KeyStoreError(f"cannot connect to the key store at {describe_url(self._url)}: "
                                f"{str(exc).strip().splitlines()[0]}") from None

    # --- transactions ---
    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """A write transaction, serialised with every other writer of the database."""
        with self._lock:
            self._ensure()
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
                yield

    def _ensure(self) -> None:
        """A live connection before a write: the server may have restarted since the last one."""
        if not (self._db.closed or self._db.broken):
            try:
                self._db.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                pass
        self._db = self._connect()

    def _next_change(self) -> int:
        """Inside a write transaction: the number that stamps the devices this write changes."""
        (value,) = self._db.execute("UPDATE meta SET value = (value::bigint + 1)::text"
                                    " WHERE name = 'generation' RETURNING value::bigint").fetchone()
        return int(value)

    def _stamp(self, device_id: str) -> None:
        self._db.execute("UPDATE devices SET changed = %s WHERE id = %s", (self._next_change(), device_id))

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except psycopg.OperationalError:
                # The server restarted or the connection dropped: one fresh try.
                self._db = self._connect()
                return self._db.execute(sql, args).fetchall()

    # --- reads ---
    def _device_rows(self, where: str = "", args: tuple = ()) -> list[Device]:
        rows = self._read(
            "SELECT id, protocol, created_at, revoked_at, last_seen, readings, rejected, connections"
            f' FROM devices {where} ORDER BY id COLLATE "C"', args)
        cred_sql = "SELECT device_id, generation, created_at, expires_at, confirmed_at FROM credentials"
        if where:
            cred_sql += " WHERE device_id IN (SELECT id FROM devices " + where + ")"
        cred_sql += " ORDER BY generation"
        creds: dict[str, list[CredentialInfo]] = {}
        for dev, gen, created, expires, confirmed in self._read(cred_sql, args):
            creds.setdefault(dev, []).append(CredentialInfo(gen, created, expires, confirmed))
        return [Device(*row, credentials=tuple(creds.get(row[0], ()))) for row in rows]

    def get(self, device_id: str) -> Device | None:
        with self._lock:
            found = self._device_rows("WHERE id = %s", (device_id,))
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
            current = self.generation()
            rows = self._read(
                "SELECT c.device_id, c.generation, c.sealed, c.expires_at, d.revoked_at"
                " FROM credentials c JOIN devices d ON d.id = c.device_id WHERE d.protocol = %s"
                " AND d.changed > %s", (protocol, since))
            out = []
            for device_id, gen, sealed, expires, revoked in rows:
                secret = self._unsealed.get((device_id, gen))
                if secret is None:
                    secret = self._sealer.unseal(device_id, protocol, bytes(sealed))
                    self._unsealed[(device_id, gen)] = secret
                out.append(Credential(device_id, protocol, gen, secret, expires, revoked is not None))
            return out, current

    def generation(self) -> int:
        """Changes whenever any instance changes devices or credentials: cheap change detection."""
        return int(self._read("SELECT value FROM meta WHERE name = 'generation'")[0][0])

    # --- writes ---
    def _insert_credential(self, device_id: str, protocol: str, generation: int, secret: dict[str, str],
                           now: float) -> None:
        kind = KINDS[protocol]
        fingerprint = self._sealer.fingerprint(protocol, kind.material(secret))
        clash = self._db.execute(
            "SELECT c.device_id FROM credentials c JOIN devices d ON d.id = c.device_id"
            " WHERE c.fingerprint = %s AND d.revoked_at IS NULL"
            " AND (c.expires_at IS NULL OR c.expires_at > %s) AND c.device_id != %s",
            (fingerprint, now, device_id)).fetchone()
        key_id = kind.key_id(secret)
        if clash is None and key_id is not None:
            clash = self._db.execute("SELECT device_id FROM credentials WHERE key_id = %s",
                                     (key_id,)).fetchone()
        if clash is not None:
            raise CredentialsInUse("these credentials are already registered to another device", device_id)
        self._db.execute(
            "INSERT INTO credentials(device_id, generation, sealed, fingerprint, key_id, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (device_id, generation, self._sealer.seal(device_id, protocol, secret), fingerprint, key_id, now))

    def _add(self, device: NewDevice, now: float, change: int) -> None:
        existing = self._db.execute("SELECT revoked_at FROM devices WHERE id = %s", (device.id,)).fetchone()
        if existing is not None:
            state = " (revoked)" if existing[0] is not None else ""
            raise DeviceExists(f"device {device.id} already exists{state}", device.id)
        self._db.execute("INSERT INTO devices(id, protocol, created_at, changed) VALUES (%s, %s, %s, %s)",
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
            row = self._db.execute("SELECT revoked_at FROM devices WHERE id = %s", (device_id,)).fetchone()
            if row is None:
                raise DeviceNotFound(f"no device {device_id}", device_id)
            if row[0] is not None:
                raise DeviceRevoked(f"device {device_id} is already revoked", device_id)
            self._db.execute("UPDATE devices SET revoked_at = %s WHERE id = %s", (now, device_id))
            self._stamp(device_id)
            self._append_audit(actor, "revoked", device_id, {}, now)
        return self._must_get(device_id)

    def rotate(self, device_id: str, secret: dict[str, str], grace: float, actor: str = "admin") -> Device:
        """New current credentials; the previous current ones stay valid for `grace` seconds."""
        now = self._clock()
        with self._tx():
            row = self._db.execute("SELECT protocol, revoked_at FROM devices WHERE id = %s",
                                   (device_id,)).fetchone()
            if row is None:
                raise DeviceNotFound(f"no device {device_id}", device_id)
            protocol, revoked = row
            if revoked is not None:
                raise DeviceRevoked(f"device {device_id} is revoked", device_id)
            (top,) = self._db.execute("SELECT MAX(generation) FROM credentials WHERE device_id = %s",
                                      (device_id,)).fetchone()
            self._db.execute(
                "UPDATE credentials SET expires_at = %s WHERE device_id = %s AND generation < %s"
                " AND (expires_at IS NULL OR expires_at > %s)", (now, device_id, top, now))
            self._db.execute("UPDATE credentials SET expires_at = %s"
                             " WHERE device_id = %s AND generation = %s", (now + grace, device_id, top))
            self._insert_credential(device_id, protocol, top + 1, secret, now)
            self._stamp(device_id)
            self._append_audit(actor, "rotated", device_id, {"generation": top + 1, "grace": grace}, now)
        return self._must_get(device_id)

    def confirm(self, device_id: str, generation: int) -> None:
        """The device used credential `generation`: the overlap of older ones ends now."""
        now = self._clock()
        with self._tx():
            changed = self._db.execute(
                "UPDATE credentials SET confirmed_at = %s WHERE device_id = %s AND generation = %s"
                " AND confirmed_at IS NULL", (now, device_id, generation)).rowcount
            ended = self._db.execute(
                "UPDATE credentials SET expires_at = %s WHERE device_id = %s AND generation < %s"
                " AND (expires_at IS NULL OR expires_at > %s)", (now, device_id, generation, now)).rowcount
            if changed or ended:
                self._stamp(device_id)
            if changed and ended:
                self._append_audit("auth", "rotation_confirmed", device_id, {"generation": generation}, now)

    def record_seen(self, batch: dict[str, Seen]) -> None:
        """Counters only: no change stamp (auth caches need no reload for them)."""
        if not batch:
            return
        with self._tx(), self._db.cursor() as cur:
            cur.executemany(
                "UPDATE devices SET last_seen = GREATEST(COALESCE(last_seen, 0), %s),"
                " readings = readings + %s, rejected = rejected + %s, connections = connections + %s"
                " WHERE id = %s",
                [(s.last_seen, s.readings, s.rejected, s.connections, d) for d, s in batch.items()])

    # --- protocol v2 replay windows ---
    def v2_window(self, key_id: str) -> str | None:
        rows = self._read('SELECT "window" FROM v2_windows WHERE key_id = %s', (key_id,))
        return rows[0][0] if rows else None

    def save_v2_window(self, key_id: str, device_id: str, window: str) -> None:
        """Written before auth answers: a restarted auth never accepts a seq twice.

        Never moves a window back ("last:verified:acked", last first): with several auth
        instances, one that served a device earlier may flush its older copy after another
        instance saved a newer one; the newer one stays."""
        sql = ('INSERT INTO v2_windows(key_id, device_id, "window") VALUES (%s, %s, %s)'
               ' ON CONFLICT (key_id) DO UPDATE SET "window" = excluded."window"'
               """ WHERE split_part(v2_windows."window", ':', 1)::bigint"""
               """ <= split_part(excluded."window", ':', 1)::bigint""")
        with self._lock:
            if self._db.closed or self._db.broken:
                self._db = self._connect()
            try:
                self._db.execute(sql, (key_id, device_id, window))
            except psycopg.OperationalError:
                # One statement, idempotent: safe to send again on a fresh connection.
                self._db = self._connect()
                self._db.execute(sql, (key_id, device_id, window))

    # --- audit ---
    def _append_audit(self, actor: str, action: str, device: str | None, detail: dict[str, Any],
                      now: float) -> AuditEntry:
        last = self._db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
        digest = audit_hash(prev, seq, now, actor, action, device, detail)
        self._db.execute("INSERT INTO audit(seq, ts, actor, action, device, detail, prev, hash)"
                         " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                         (seq, now, actor, action, device, json.dumps(detail, sort_keys=True), prev, digest))
        return AuditEntry(seq, now, actor, action, device, detail, prev, digest)

    def append_audit(self, actor: str, action: str, device: str | None, detail: dict[str, Any]) -> AuditEntry:
        with self._tx():
            return self._append_audit(actor, action, device, detail, self._clock())

    def audit(self, after: int = 0, limit: int = 1000) -> list[AuditEntry]:
        rows = self._read(
            "SELECT seq, ts, actor, action, device, detail, prev, hash FROM audit WHERE seq > %s"
            " ORDER BY seq LIMIT %s", (after, limit))
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


def _loads(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"unparsable": text}
    return value if isinstance(value, dict) else {"value": value}


def open_store(config: Config) -> KeyStore:
    """The configured key store: PostgreSQL for postgresql:// URLs, else the state dir's SQLite file."""
    url = config.keystore_url
    if not url:
        return SQLiteKeyStore.open(config)
    scheme = urlsplit(url).scheme
    if scheme not in ("postgresql", "postgres"):
        raise KeyStoreError(f"MEDSEC_KEYSTORE_URL must be a postgresql:// URL, got a {scheme!r} one")
    return PostgresKeyStore.open(config)
