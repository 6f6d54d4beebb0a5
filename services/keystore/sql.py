"""SQLKeyStoreBase: the key store's logic and statements, shared by the SQLite and PostgreSQL backends.

Secrets are sealed (sealing.py) before they reach the database and unsealed
only in memory. The backends (sqlite.py, postgres.py) add only the connection,
transactions and dialect details.
"""
from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from services.common.logs import kv
from services.keystore import integrity, schema
from services.keystore.audit import (
    CHECKPOINT,
    GENESIS,
    AuditEntry,
    Broken,
    audit_hash,
    loads_detail,
    verify_chain,
)
from services.keystore.credentials import KINDS
from services.keystore.integrity import IntegrityFailed
from services.keystore.models import (
    Credential,
    CredentialInfo,
    CredentialsInUse,
    Device,
    DeviceExists,
    DeviceNotFound,
    DeviceRevoked,
    KeyStoreError,
    NewDevice,
    Seen,
    Station,
    StationExists,
    StationNotFound,
    Token,
    TokenExists,
    TokenNotFound,
)
from services.keystore.sealing import Sealer, SealError

log = logging.getLogger("medsec.keystore")
# services/common/v2.py ReplayWindow().to_text(): nothing accepted yet.
INITIAL_WINDOW = "0:0:0"


class SQLKeyStoreBase:
    """The store's logic, shared by the SQLite and PostgreSQL backends.

    Statements are written once, with `?` placeholders and SQL both dialects accept; a subclass
    supplies the connection (`_db`), write transactions (`_tx`), `generation()`, `_write_one()`,
    its append-only triggers and the few class attributes below, and calls `_migrate()` once
    connected. Thread-safe: one connection behind a lock.
    """

    _CHANGES = "changes"  # the meta row holding the change counter
    _GREATEST = "MAX"  # the two-argument maximum
    _BY_ID = "id"  # how devices and stations are ordered (the same order on every backend)
    _TYPES = schema.SQLITE_TYPES  # the type names of schema.py
    _TRIGGERS: tuple[str, ...] = ()  # the append-only audit triggers, in the dialect

    _db: Any

    def __init__(self, sealer: Sealer, clock: Callable[[], float]) -> None:
        self._sealer = sealer
        self._clock = clock
        self._lock = threading.RLock()
        self._unsealed: dict[tuple[str, int], dict[str, str]] = {}
        self.integrity_failures = integrity.Failures()
        self._verified: dict[str, tuple[str, tuple]] = {}
        self._batch: str | None = None  # batch(): None, "wanted" (no write yet) or "open"
        # The v2 windows the open batch wrote (their rows locked until it commits), by key id.
        self._held: dict[str, _HeldWindow] = {}

    # --- the schema: one migration path for both backends ---
    def _migrate(self) -> None:
        """Create what is missing and bring an older database to the current schema, in one write."""
        with self._tx():
            for stmt in schema.tables(self._TYPES):
                self._x(stmt)
            added = set()
            for table, name, declaration in schema.COLUMNS:
                if name not in self._columns(table):
                    declared = schema.column(declaration, self._TYPES)
                    self._x(f"ALTER TABLE {table} ADD COLUMN {name} {declared}")
                    added.add((table, name))
            for stmt in schema.INDEXES + self._TRIGGERS:
                self._x(stmt)
            self._fill_idents()
            # The change counter: every write that matters to auth stamps the device, so auth
            # reloads only the devices changed since its last look (not 10,000 keys per added device).
            self._x("INSERT INTO meta(name, value) VALUES ('schema', ?), (?, '0')"
                    " ON CONFLICT (name) DO NOTHING", (str(schema.SCHEMA_VERSION), self._CHANGES))
            self._protect_existing([t for t in schema.MAC_TABLES if (t, "mac") in added])

    def _protect_existing(self, tables: list[str]) -> None:
        """The one-time upgrade of a store written before row MACs and the keyed audit chain.

        Runs only in the migration that adds the MAC columns: the rows as they are now get their
        MACs, and a non-empty unkeyed audit log gets a keyed checkpoint entry anchoring its head.
        After that, a missing MAC is a failure like a wrong one (never filled in again)."""
        counts = {}
        for table in tables:
            counts[table] = len(self._x(f"SELECT 1 FROM {table} WHERE mac IS NULL").fetchall())
        if "devices" in tables:
            for device_id, protocol, revoked in self._x(
                    "SELECT id, protocol, revoked_at FROM devices WHERE mac IS NULL").fetchall():
                fields = integrity.device_fields(device_id, protocol, revoked)
                self._x("UPDATE devices SET mac = ? WHERE id = ?", (self._mac("devices", fields), device_id))
        if "credentials" in tables:
            for device_id, gen, *rest in self._x(
                    "SELECT device_id, generation, created_at, expires_at, confirmed_at FROM credentials"
                    " WHERE mac IS NULL").fetchall():
                self._x("UPDATE credentials SET mac = ? WHERE device_id = ? AND generation = ?",
                        (self._mac("credentials", integrity.credential_fields(device_id, gen, *rest)),
                         device_id, gen))
        if "v2_windows" in tables:
            for key_id, device_id, window in self._x(
                    'SELECT key_id, device_id, "window" FROM v2_windows WHERE mac IS NULL').fetchall():
                self._x("UPDATE v2_windows SET mac = ? WHERE key_id = ?",
                        (self._mac("v2_windows", integrity.window_fields(key_id, device_id, window)), key_id))
        if "v2_windows" in tables:
            # Keys registered before windows were created at registration: give them one now.
            for key_id, device_id, protocol in self._x(
                    "SELECT c.key_id, c.device_id, d.protocol FROM credentials c JOIN devices d"
                    " ON d.id = c.device_id WHERE c.key_id IS NOT NULL AND NOT EXISTS"
                    " (SELECT 1 FROM v2_windows w WHERE w.key_id = c.key_id)").fetchall():
                self._init_window(device_id, protocol, {"key_id": key_id})
        anchored = None
        if "devices" in tables:
            head = self._x("SELECT seq FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            if head is not None:
                anchored = head[0]
                self._append_audit("keystore", CHECKPOINT, None, {"anchors": anchored}, self._clock())
        if any(counts.values()) or anchored:
            log.warning(kv(event="integrity_migrated", devices=counts.get("devices", 0),
                           credentials=counts.get("credentials", 0), windows=counts.get("v2_windows", 0),
                           audit_anchored=anchored or 0))

    def _mac(self, table: str, fields: tuple) -> str:
        return integrity.mac(self._sealer, table, fields)

    def _intact(self, table: str, key: str, device: str | None, fields: tuple, stored: str | None) -> bool:
        """Check a row's MAC; a failure is logged (once per row state) and counted. Rows verified
        before are remembered by MAC (auth reloads the same rows often)."""
        if stored is not None and self._verified.get(stored) == (table, fields):
            return True
        if integrity.intact(self._sealer, table, fields, stored):
            if len(self._verified) > 1_000_000:
                self._verified.clear()
            self._verified[stored] = (table, fields)  # type: ignore[index]
            return True
        self.integrity_failures.report(table, key, device, stored)
        return False

    def _fill_idents(self) -> None:
        """Rows written before the ident column (or by an older version): compute it once, here,
        where the sealer is (the column holds a keyed digest, never key material)."""
        for protocol, kind in KINDS.items():
            if kind.ident is None:
                continue
            rows = self._x(
                "SELECT c.device_id, c.generation, c.sealed FROM credentials c"
                " JOIN devices d ON d.id = c.device_id WHERE c.ident IS NULL AND d.protocol = ?",
                (protocol,)).fetchall()
            for device_id, generation, sealed in rows:
                try:
                    secret = self._sealer.unseal(device_id, protocol, bytes(sealed))
                except SealError:
                    continue  # refused where it is used (auth); the store still opens
                self._x("UPDATE credentials SET ident = ? WHERE device_id = ? AND generation = ?",
                        (self._ident(protocol, secret), device_id, generation))

    def _ident(self, protocol: str, secret: dict[str, str]) -> str | None:
        """The identification fingerprint of a credential (credentials.CredentialKind.ident)."""
        ident = KINDS[protocol].ident
        return None if ident is None else self._sealer.fingerprint(f"{protocol}-ident", ident(secret))

    def _columns(self, table: str) -> set[str]:
        return {column[0] for column in self._x(f"SELECT * FROM {table} LIMIT 0").description}

    # --- the dialect ---
    def _tx(self) -> AbstractContextManager[None]:
        """A write transaction, serialised with every other writer of the database."""
        raise NotImplementedError

    def generation(self) -> int:
        raise NotImplementedError

    def _write_one(self, sql: str, args: tuple) -> int:
        """Run one idempotent write statement on its own (autocommit); the rows it changed."""
        raise NotImplementedError

    def _read_locked(self, sql: str, args: tuple) -> list[tuple]:
        """Inside a batch: one SELECT in the batch's transaction (begun by it if need be), and what
        it read may change under no other writer until the batch ends (SQLite: the database's
        write lock; PostgreSQL: FOR UPDATE, the rows it found)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """The v2 window writes inside are committed together when it closes: one commit (one
        journal flush) for a stretch of frames, not one each (issue 13; after an auth restart, a
        commit per frame on PostgreSQL made auth fall behind the devices' resends). The dialect's
        `_write_one` begins the transaction at the first write and sets `_batch` to "open", so a
        batch without writes costs nothing. The caller must not wait inside (another client's
        writes would join it) and answers only after it closed; if anything in it failed, it
        raises and nothing of the batch was written."""
        with self._lock:
            self._batch = "wanted"
            try:
                yield
                if self._batch == "open":
                    self._check_batch()
                for key_id in list(self._held):
                    self._write_held(key_id)
                if self._batch == "open":
                    self._commit_batch()
            except BaseException:
                if self._batch == "open":
                    self._rollback_batch()
                raise
            finally:
                self._batch = None
                self._held.clear()

    def _check_batch(self) -> None:
        """Raise KeyStoreError if a statement of the open batch failed and the database will
        take no more of it (PostgreSQL); SQLite's transaction goes on after a failed statement."""

    def _commit_batch(self) -> None:
        raise NotImplementedError

    def _rollback_batch(self) -> None:
        """Undo the open batch; quiet if the connection is gone (then so is the transaction)."""
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
            "SELECT id, protocol, created_at, revoked_at, last_seen, readings, rejected, connections, mac"
            f" FROM devices {where} ORDER BY {self._BY_ID}", args)
        creds: dict[str, list[CredentialInfo]] = {}
        bad: set[str] = set()
        cred_sql = "SELECT device_id, generation, created_at, expires_at, confirmed_at, mac FROM credentials"
        if where:
            cred_sql += " WHERE device_id IN (SELECT id FROM devices " + where + ")"
        cred_sql += " ORDER BY generation"
        for dev, gen, created, expires, confirmed, mac in self._read(cred_sql, args):
            creds.setdefault(dev, []).append(CredentialInfo(gen, created, expires, confirmed))
            if not self._intact("credentials", f"{dev}/{gen}", dev,
                                integrity.credential_fields(dev, gen, created, expires, confirmed), mac):
                bad.add(dev)
        bad |= self._unrevoked(f"SELECT id FROM devices {where}", args)
        devices = []
        for *row, mac in rows:
            ok = self._intact("devices", row[0], row[0], integrity.device_fields(row[0], row[1], row[3]), mac)
            devices.append(Device(*row, credentials=tuple(creds.get(row[0], ())),
                                  intact=ok and row[0] not in bad))
        return devices

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
                "SELECT c.device_id, c.generation, c.sealed, c.created_at, c.expires_at, c.confirmed_at,"
                " c.mac, d.revoked_at, d.mac FROM credentials c JOIN devices d ON d.id = c.device_id"
                " WHERE d.protocol = ? AND d.changed > ?", (protocol, since))
            # Fail closed per device: one of its rows edited without the master key makes all of its
            # credentials unusable (counted as revoked, so auth answers "revoked" for them).
            bad = self._unrevoked("SELECT id FROM devices WHERE protocol = ? AND changed > ?",
                                  (protocol, since))
            for device_id, gen, _, created, expires, confirmed, mac, revoked, device_mac in rows:
                fields = integrity.credential_fields(device_id, gen, created, expires, confirmed)
                if not (self._intact("devices", device_id, device_id,
                                     integrity.device_fields(device_id, protocol, revoked), device_mac)
                        and self._intact("credentials", f"{device_id}/{gen}", device_id, fields, mac)):
                    bad.add(device_id)
            out = []
            for device_id, gen, sealed, _, expires, _, _, revoked, _ in rows:
                secret = self._unsealed.get((device_id, gen))
                if secret is None:
                    try:
                        # bytes(): psycopg hands BYTEA back as a memoryview.
                        secret = self._sealer.unseal(device_id, protocol, bytes(sealed))
                    except SealError:
                        if device_id in bad:  # e.g. relabelled v2 -> v1: nothing to serve
                            continue
                        raise
                    self._unsealed[(device_id, gen)] = secret
                out.append(Credential(device_id, protocol, gen, secret, expires,
                                      revoked is not None or device_id in bad))
            return out, current

    def _unrevoked(self, devices_sql: str, args: tuple) -> set[str]:
        """Devices among `devices_sql` that the audit log says were revoked but are not revoked now.

        A row MAC binds values, not their age: an older copy of a device row, MAC and all, put
        back after its revocation, verifies. Its revocation entry in the keyed audit log does not
        go away so easily (editing or dropping it breaks the chain, cutting the log's end is caught
        by the broker's witness), and a revoked id is never registered again: so this is refused."""
        found = {row[0] for row in self._read(
            "SELECT DISTINCT a.device FROM audit a JOIN devices d ON d.id = a.device"
            f" WHERE a.action = 'revoked' AND d.revoked_at IS NULL AND d.id IN ({devices_sql})", args)}
        for device_id in found:
            self.integrity_failures.report("devices", device_id, device_id, "revoked in the audit log")
        return found

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
        ident = self._ident(protocol, secret)
        key_id = kind.key_id(secret)
        clash = None
        if ident is not None:
            self._check_clash(device_id, ident, now)  # stricter than the whole-key fingerprint
        else:
            clash = self._x(
                "SELECT c.device_id FROM credentials c JOIN devices d ON d.id = c.device_id"
                " WHERE c.fingerprint = ? AND d.revoked_at IS NULL"
                " AND (c.expires_at IS NULL OR c.expires_at > ?) AND c.device_id != ?",
                (fingerprint, now, device_id)).fetchone()
        if clash is None and key_id is not None:
            clash = self._x("SELECT device_id FROM credentials WHERE key_id = ?", (key_id,)).fetchone()
        if clash is not None:
            raise CredentialsInUse(f"these credentials are already registered to device {clash[0]}",
                                   device_id)
        self._x(
            "INSERT INTO credentials(device_id, generation, sealed, fingerprint, key_id, created_at, ident)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (device_id, generation, self._sealer.seal(device_id, protocol, secret), fingerprint, key_id, now,
             ident))

    def _check_clash(self, device_id: str, ident: str, now: float) -> None:
        """Refuse credentials identification could confuse with any credential already stored: of
        another device or of this one (an older generation), active, in its grace period, expired
        or revoked (a revoked device's copy would still be published under the new id)."""
        rows = self._x(
            "SELECT c.device_id, c.generation, c.expires_at, d.revoked_at FROM credentials c"
            " JOIN devices d ON d.id = c.device_id WHERE c.ident = ?", (ident,)).fetchall()
        if not rows:
            return
        # Name another device first: that is the clash an operator must hear about.
        other, generation, expires, revoked = sorted(rows, key=lambda r: (r[0] == device_id, r[0], r[1]))[0]
        if revoked is not None:
            state = "revoked"
        elif expires is None:
            state = "current"
        else:
            state = "in its rotation grace period" if expires > now else "expired"
        whose = f"its own generation {generation}" if other == device_id else f"{state} credentials"
        raise CredentialsInUse(
            f"the credential given for {device_id} clashes with device {other} ({whose}): the same key"
            " and first 9 IV characters, which v1 identification cannot tell apart", device_id)

    def credential_clashes(self) -> list[list[tuple[str, int]]]:
        """Groups of credentials identification cannot tell apart, as (device, generation) pairs:
        a store written before the clash check, or behind the store's back. Never key material."""
        rows = self._read(
            "SELECT ident, device_id, generation FROM credentials WHERE ident IN"
            " (SELECT ident FROM credentials WHERE ident IS NOT NULL GROUP BY ident HAVING COUNT(*) > 1)")
        groups: dict[str, list[tuple[str, int]]] = {}
        for ident, device_id, generation in rows:
            groups.setdefault(ident, []).append((device_id, int(generation)))
        return sorted(sorted(group) for group in groups.values())

    def _add(self, device: NewDevice, now: float, change: int) -> None:
        existing = self._x("SELECT revoked_at FROM devices WHERE id = ?", (device.id,)).fetchone()
        if existing is not None:
            state = " (revoked)" if existing[0] is not None else ""
            raise DeviceExists(f"device {device.id} already exists{state}", device.id)
        self._x("INSERT INTO devices(id, protocol, created_at, changed, mac) VALUES (?, ?, ?, ?, ?)",
                (device.id, device.protocol, now, change,
                 self._mac("devices", integrity.device_fields(device.id, device.protocol, None))))
        self._insert_credential(device.id, device.protocol, 1, device.secret, now)
        self._remac_credentials(device.id, {1})
        self._init_window(device.id, device.protocol, device.secret)

    def _init_window(self, device_id: str, protocol: str, secret: dict[str, str]) -> None:
        """A v2 key's replay window exists (MAC'd) from registration on, so a window deleted from
        the database is told apart from one never used: v2_window refuses a missing one."""
        key_id = KINDS[protocol].key_id(secret)
        if key_id is not None:
            self._x('INSERT INTO v2_windows(key_id, device_id, "window", mac) VALUES (?, ?, ?, ?)'
                    " ON CONFLICT (key_id) DO NOTHING",
                    (key_id, device_id, INITIAL_WINDOW, self._window_mac(key_id, device_id, INITIAL_WINDOW)))

    def _intact_generations(self, device_id: str) -> set[int]:
        """Inside a write: the device's credential generations whose rows verify now. A write
        re-MACs only these, so it never launders a row edited behind the store's back."""
        rows = self._x("SELECT generation, created_at, expires_at, confirmed_at, mac FROM credentials"
                       " WHERE device_id = ?", (device_id,)).fetchall()
        fields = integrity.credential_fields
        return {gen for gen, created, expires, confirmed, mac in rows
                if self._intact("credentials", f"{device_id}/{gen}", device_id,
                                fields(device_id, gen, created, expires, confirmed), mac)}

    def _remac_credentials(self, device_id: str, generations: set[int]) -> None:
        """Inside a write: (re)write the MACs of `generations` of the device from their stored fields."""
        for gen, created, expires, confirmed in self._x(
                "SELECT generation, created_at, expires_at, confirmed_at FROM credentials"
                " WHERE device_id = ?", (device_id,)).fetchall():
            if gen in generations:
                self._x("UPDATE credentials SET mac = ? WHERE device_id = ? AND generation = ?",
                        (self._mac("credentials", integrity.credential_fields(
                            device_id, gen, created, expires, confirmed)), device_id, gen))

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
            row = self._x("SELECT revoked_at, protocol FROM devices WHERE id = ?", (device_id,)).fetchone()
            if row is None:
                raise DeviceNotFound(f"no device {device_id}", device_id)
            if row[0] is not None:
                raise DeviceRevoked(f"device {device_id} is already revoked", device_id)
            # Revoked is the safe state: the row gets a fresh MAC even if it had been tampered with.
            self._x("UPDATE devices SET revoked_at = ?, mac = ? WHERE id = ?",
                    (now, self._mac("devices", integrity.device_fields(device_id, row[1], now)), device_id))
            self._stamp(device_id)
            self._append_audit(actor, "revoked", device_id, {}, now)
        return self._must_get(device_id)

    def rotate(self, device_id: str, secret: dict[str, str], grace: float, actor: str = "admin") -> Device:
        """New current credentials; the previous current ones stay valid for `grace` seconds."""
        now = self._clock()
        with self._tx():
            row = self._x("SELECT protocol, revoked_at, mac FROM devices WHERE id = ?",
                          (device_id,)).fetchone()
            if row is None:
                raise DeviceNotFound(f"no device {device_id}", device_id)
            protocol, revoked, mac = row
            if revoked is not None:
                raise DeviceRevoked(f"device {device_id} is revoked", device_id)
            if not self._intact("devices", device_id, device_id,
                                integrity.device_fields(device_id, protocol, revoked), mac):
                raise IntegrityFailed(f"device {device_id} failed its integrity check (its row was changed "
                                      "without the master key); revoke it and register it again", device_id)
            intact = self._intact_generations(device_id)
            (top,) = self._x("SELECT MAX(generation) FROM credentials WHERE device_id = ?",
                             (device_id,)).fetchone()
            # Only the credential current until now gets the overlap; older ones end at once.
            self._x("UPDATE credentials SET expires_at = ? WHERE device_id = ? AND generation < ?"
                    " AND (expires_at IS NULL OR expires_at > ?)", (now, device_id, top, now))
            self._x("UPDATE credentials SET expires_at = ? WHERE device_id = ? AND generation = ?",
                    (now + grace, device_id, top))
            self._insert_credential(device_id, protocol, top + 1, secret, now)
            self._remac_credentials(device_id, intact | {top + 1})
            self._init_window(device_id, protocol, secret)
            self._stamp(device_id)
            self._append_audit(actor, "rotated", device_id, {"generation": top + 1, "grace": grace}, now)
        return self._must_get(device_id)

    def confirm(self, device_id: str, generation: int) -> None:
        """The device used credential `generation`: the overlap of older ones ends now."""
        now = self._clock()
        with self._tx():
            intact = self._intact_generations(device_id)
            changed = self._x(
                "UPDATE credentials SET confirmed_at = ? WHERE device_id = ? AND generation = ?"
                " AND confirmed_at IS NULL", (now, device_id, generation)).rowcount
            ended = self._x(
                "UPDATE credentials SET expires_at = ? WHERE device_id = ? AND generation < ?"
                " AND (expires_at IS NULL OR expires_at > ?)", (now, device_id, generation, now)).rowcount
            if changed or ended:
                self._remac_credentials(device_id, intact)
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
        """The stored window; IntegrityFailed when it was changed without the master key (a reset
        window would let old frames in again): the caller refuses the device's frames."""
        self._write_held(key_id)
        # "window" quoted: a reserved word in PostgreSQL.
        rows = self._read('SELECT "window", device_id, mac FROM v2_windows WHERE key_id = ?', (key_id,))
        if not rows:
            known = self._read("SELECT device_id FROM credentials WHERE key_id = ?", (key_id,))
            if known:  # registered keys have a window from the start: this one was deleted
                self.integrity_failures.report("v2_windows", key_id, known[0][0], None)
                raise IntegrityFailed(f"the replay window of key id {key_id} is missing", known[0][0])
            return None
        window, device_id, mac = rows[0]
        if not self._intact("v2_windows", key_id, device_id,
                            integrity.window_fields(key_id, device_id, window), mac):
            raise IntegrityFailed(f"the replay window of key id {key_id} failed its integrity check",
                                  device_id)
        return window

    def _write_window_if(self, key_id: str, device_id: str, window: str, accepted: str) -> bool:
        """Insert a window, or replace the stored one only while the stored one has accepted
        exactly `accepted` ("last:verified:", the text before the ack bits). True if written."""
        # LIKE is a plain prefix match here: window text is digits, hex and colons, no wildcards.
        sql = ('INSERT INTO v2_windows(key_id, device_id, "window", mac) VALUES (?, ?, ?, ?)'
               ' ON CONFLICT (key_id) DO UPDATE SET "window" = excluded."window",'
               ' device_id = excluded.device_id, mac = excluded.mac WHERE v2_windows."window" LIKE ?')
        mac = self._window_mac(key_id, device_id, window)
        return self._write_one(sql, (key_id, device_id, window, mac, accepted + "%")) > 0

    def _window_mac(self, key_id: str, device_id: str, window: str) -> str:
        return self._mac("v2_windows", integrity.window_fields(key_id, device_id, window))

    def save_v2_window(self, key_id: str, device_id: str, window: str) -> bool:
        """Ack-bit flushes: written only over a stored window that accepted the same seqs.

        With several auth instances, one that served a device earlier may flush its older copy
        after another accepted more; then nothing is written (False), and the caller merges its
        ack bits into the stored window. Accepting a seq goes through `advance_v2_window`."""
        self._write_held(key_id)
        return self._write_window_if(key_id, device_id, window, _accepted(window))

    def advance_v2_window(self, key_id: str, device_id: str, window: str, base: str) -> bool:
        """Accept a seq: store `window`, built from `base` plus that seq, only if the stored window
        still has accepted what `base` has.

        One atomic compare-and-set, written before auth answers (a restarted auth never accepts
        a seq twice). False when the stored window accepted something since `base` was read
        (another auth instance): the caller must reload it and classify the seq again.

        Inside a batch nothing is written at once: a key's first advance reads the stored window
        with a lock that holds it until the batch ends (`_read_locked`), so no other instance can
        change it meanwhile, and compares; its later advances are compared with what the batch
        made of the window; the last is written just before the commit, one write for the run
        (issue 13: a device's frames come in runs; with auth keeping up, a stretch often holds
        one run of ~13 frames, and the write and row MAC at its first frame were ~0.5 µs of each
        of them). A key with no stored window yet is inserted at once: there is no row to lock."""
        with self._lock:  # the batch's thread holds it throughout: `_held` is that thread's
            held = self._held.get(key_id)
            if held is not None:
                if _accepted(held.now) != _accepted(base):
                    return False
                held.device_id, held.now = device_id, window
                return True
            if self._batch is None:
                return self._write_window_if(key_id, device_id, window, _accepted(base))
            rows = self._read_locked('SELECT "window" FROM v2_windows WHERE key_id = ?', (key_id,))
            if not rows:
                if not self._write_window_if(key_id, device_id, window, _accepted(base)):
                    return False
                self._held[key_id] = _HeldWindow(device_id, window, window)
                return True
            if _accepted(rows[0][0]) != _accepted(base):
                return False
            self._held[key_id] = _HeldWindow(device_id, rows[0][0], window)
            return True

    def _write_held(self, key_id: str) -> None:
        """Write the last window the open batch accepted for `key_id`, if it moved since written."""
        with self._lock:
            held = self._held.pop(key_id, None)
            if held is None or held.now == held.written:
                return
            if not self._write_window_if(key_id, held.device_id, held.now, _accepted(held.written)):
                # Cannot happen while the batch holds the row's lock: fail the batch, write nothing.
                raise KeyStoreError(f"the replay window of key id {key_id} changed inside a batch")

    # --- dispatch stations ---
    _STATION = "SELECT id, public_key, fingerprint, created_at, revoked_at FROM dispatch_stations"

    def add_station(self, station: str, public_key: str, fingerprint: str) -> Station:
        """Register a station's key; an active one must be revoked first, a revoked id is reused."""
        with self._tx():
            row = self._x("SELECT revoked_at FROM dispatch_stations WHERE id = ?", (station,)).fetchone()
            if row is not None and row[0] is None:
                raise StationExists(f"station {station!r} is already registered; revoke it first")
            self._x(
                "INSERT INTO dispatch_stations (id, public_key, fingerprint, created_at, revoked_at)"
                " VALUES (?, ?, ?, ?, NULL) ON CONFLICT (id) DO UPDATE SET public_key = excluded.public_key,"
                " fingerprint = excluded.fingerprint, created_at = excluded.created_at, revoked_at = NULL",
                (station, public_key, fingerprint, self._clock()))
        return self.station(station)

    def station(self, station: str) -> Station:
        """One station, also a revoked one."""
        rows = self._read(f"{self._STATION} WHERE id = ?", (station,))
        if not rows:
            raise StationNotFound(f"no station {station!r}")
        return Station(*rows[0])

    def stations(self) -> list[Station]:
        """The active stations."""
        rows = self._read(f"{self._STATION} WHERE revoked_at IS NULL ORDER BY {self._BY_ID}")
        return [Station(*row) for row in rows]

    def revoke_station(self, station: str) -> Station:
        with self._tx():
            revoked = self._x("UPDATE dispatch_stations SET revoked_at = ?"
                              " WHERE id = ? AND revoked_at IS NULL", (self._clock(), station)).rowcount
        if revoked == 0:
            raise StationNotFound(f"no active station {station!r}")
        return self.station(station)

    # --- audit ---
    def _append_audit(self, actor: str, action: str, device: str | None, detail: dict[str, Any],
                      now: float) -> AuditEntry:
        last = self._x("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
        digest = audit_hash(self._sealer.audit_key, prev, seq, now, actor, action, device, detail)
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
        return [AuditEntry(seq, ts, actor, action, device, loads_detail(detail), prev, digest)
                for seq, ts, actor, action, device, detail, prev, digest in rows]

    def verify_audit(self) -> tuple[list[AuditEntry], Broken | None]:
        """The whole log and the first broken link (keyed chain, audit.py), or None."""
        entries: list[AuditEntry] = []
        while True:
            page = self.audit(after=entries[-1].seq if entries else 0, limit=1000)
            entries += page
            if len(page) < 1000:
                return entries, verify_chain(entries, self._sealer.audit_key)

    # --- key-admin API tokens (the value never reaches the store: its SHA-256 does) ---
    _TOKEN = "SELECT name, scope, hash, created_at, revoked_at, mac FROM tokens"

    def _token(self, row: tuple) -> Token:
        name, scope, digest, created, revoked, mac = row
        fields = integrity.token_fields(name, scope, digest, created, revoked)
        ok = self._intact("tokens", name, None, fields, mac)
        return Token(name, scope, created, revoked, intact=ok)

    def _put_token(self, name: str, scope: str, digest: str, now: float) -> None:
        mac = self._mac("tokens", integrity.token_fields(name, scope, digest, now, None))
        self._x("INSERT INTO tokens(name, scope, hash, created_at, revoked_at, mac)"
                " VALUES (?, ?, ?, ?, NULL, ?)"
                " ON CONFLICT (name) DO UPDATE SET scope = excluded.scope, hash = excluded.hash,"
                " created_at = excluded.created_at, revoked_at = NULL, mac = excluded.mac",
                (name, scope, digest, now, mac))

    def add_token(self, name: str, scope: str, digest: str, actor: str) -> Token:
        """A new token; a revoked token's name may be used again, an active one's may not."""
        now = self._clock()
        with self._tx():
            row = self._x("SELECT revoked_at FROM tokens WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] is None:
                raise TokenExists(f"token {name!r} exists; revoke it first")
            self._put_token(name, scope, digest, now)
            self._append_audit(actor, "token_created", None, {"name": name, "scope": scope}, now)
        return self.token(name)

    def ensure_token(self, name: str, scope: str, digest: str, actor: str) -> bool:
        """Register a generated service token (keyadmin at start): True when the store changed.
        The same value stays as it is (a revoked one stays revoked); a new value replaces it."""
        now = self._clock()
        with self._tx():
            row = self._x("SELECT hash, scope FROM tokens WHERE name = ?", (name,)).fetchone()
            if row is not None and tuple(row) == (digest, scope):
                return False
            self._put_token(name, scope, digest, now)
            self._append_audit(actor, "token_registered", None, {"name": name, "scope": scope}, now)
        return True

    def token(self, name: str) -> Token:
        rows = self._read(f"{self._TOKEN} WHERE name = ?", (name,))
        if not rows:
            raise TokenNotFound(f"no token {name!r}")
        return self._token(rows[0])

    def token_by_hash(self, digest: str) -> Token | None:
        """The token whose value hashes to `digest` (its MAC checked: see Token.intact), or None."""
        rows = self._read(f"{self._TOKEN} WHERE hash = ?", (digest,))
        return self._token(rows[0]) if rows else None

    def tokens(self) -> list[Token]:
        return [self._token(row) for row in self._read(f"{self._TOKEN} ORDER BY name")]

    def revoke_token(self, name: str, actor: str) -> Token:
        now = self._clock()
        with self._tx():
            row = self._x("SELECT scope, hash, created_at FROM tokens WHERE name = ? AND revoked_at IS NULL",
                          (name,)).fetchone()
            if row is None:
                raise TokenNotFound(f"no active token {name!r}")
            scope, digest, created = row
            fields = integrity.token_fields(name, scope, digest, created, now)
            self._x("UPDATE tokens SET revoked_at = ?, mac = ? WHERE name = ?",
                    (now, self._mac("tokens", fields), name))
            self._append_audit(actor, "token_revoked", None, {"name": name}, now)
        return self.token(name)

    # --- misc ---
    def _must_get(self, device_id: str) -> Device:
        device = self.get(device_id)
        assert device is not None
        return device

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass(slots=True)
class _HeldWindow:
    """A v2 window the open batch wrote (`written`) and where the batch has taken it since (`now`)."""

    device_id: str
    written: str
    now: str


def _accepted(window: str) -> str:
    """What a window text ("last:verified:acked") says was accepted: "last:verified:"."""
    return window[:window.rindex(":") + 1]
