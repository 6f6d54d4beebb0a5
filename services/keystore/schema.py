"""The key store's tables, written once for both backends, and the one way they are migrated.

Statements use the few types that differ by name only ({real}, {blob}, {int}:
see `Types`); `migrate` (sql.py) creates what is missing, adds the columns
later versions introduced to an older database, then the indexes. The
append-only audit triggers are the one dialect-specific part (each backend's
_TRIGGERS).
"""
from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Types:
    real: str
    blob: str
    int: str


SQLITE_TYPES = Types(real="REAL", blob="BLOB", int="INTEGER")
POSTGRES_TYPES = Types(real="DOUBLE PRECISION", blob="BYTEA", int="BIGINT")

TABLES = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS devices (
        id TEXT PRIMARY KEY,
        protocol TEXT NOT NULL CHECK (protocol IN ('v1', 'v2')),
        created_at {real} NOT NULL,
        revoked_at {real},
        last_seen {real},
        readings {int} NOT NULL DEFAULT 0,
        rejected {int} NOT NULL DEFAULT 0,
        connections {int} NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS credentials (
        device_id TEXT NOT NULL REFERENCES devices(id),
        generation INTEGER NOT NULL,
        sealed {blob} NOT NULL,
        fingerprint TEXT NOT NULL,
        key_id TEXT,
        created_at {real} NOT NULL,
        expires_at {real},
        confirmed_at {real},
        PRIMARY KEY (device_id, generation))""",
    """CREATE TABLE IF NOT EXISTS audit (
        seq {int} PRIMARY KEY,
        ts {real} NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        device TEXT,
        detail TEXT NOT NULL,
        prev TEXT NOT NULL,
        hash TEXT NOT NULL)""",
    # "window" quoted: a reserved word in PostgreSQL.
    """CREATE TABLE IF NOT EXISTS v2_windows (
        key_id TEXT PRIMARY KEY,
        device_id TEXT NOT NULL,
        "window" TEXT NOT NULL)""",
    # Station public keys of the dispatch workflow; a revoked id may be registered again.
    """CREATE TABLE IF NOT EXISTS dispatch_stations (
        id TEXT PRIMARY KEY,
        public_key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at {real} NOT NULL,
        revoked_at {real})""",
    # Key-admin API tokens: the SHA-256 of the value, never the value; `mac` as in integrity.py.
    """CREATE TABLE IF NOT EXISTS tokens (
        name TEXT PRIMARY KEY,
        scope TEXT NOT NULL,
        hash TEXT NOT NULL,
        created_at {real} NOT NULL,
        revoked_at {real},
        mac TEXT NOT NULL)""",
)

# Columns added after the first release: (table, column, declaration), added when missing.
COLUMNS = (
    # Change stamp: every write that matters to auth stamps its devices with the next change
    # number, so auth reloads only what changed (credentials_changed).
    ("devices", "changed", "{int} NOT NULL DEFAULT 0"),
    # Row MACs (integrity.py) over what decides whether a key may be used. Added to an older
    # database, they are computed for its rows once, in the migration that adds them (sql.py).
    ("devices", "mac", "TEXT"),
    ("credentials", "mac", "TEXT"),
    ("v2_windows", "mac", "TEXT"),
    # Identification fingerprint (v1: keyed digest of key || IV[:9], what block 0 depends on):
    # no two credentials may share it, whatever their state. Filled for older rows at open.
    ("credentials", "ident", "TEXT"),
)

# The tables whose rows carry a MAC added by COLUMNS (filled for existing rows when added).
MAC_TABLES = ("devices", "credentials", "v2_windows")

INDEXES = (
    "CREATE INDEX IF NOT EXISTS devices_changed ON devices(changed)",
    "CREATE INDEX IF NOT EXISTS credentials_fingerprint ON credentials(fingerprint)",
    "CREATE INDEX IF NOT EXISTS credentials_key_id ON credentials(key_id)",
    "CREATE INDEX IF NOT EXISTS tokens_hash ON tokens(hash)",
    # integrity.py: a device the audit log says was revoked must still be (rollback check).
    "CREATE INDEX IF NOT EXISTS audit_device ON audit(device)",
    "CREATE INDEX IF NOT EXISTS credentials_ident ON credentials(ident)",
)


def tables(types: Types) -> list[str]:
    return [stmt.format(**vars(types)) for stmt in TABLES]


def column(declaration: str, types: Types) -> str:
    return declaration.format(**vars(types))
