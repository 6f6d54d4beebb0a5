"""The history store: raw readings and per-minute aggregates, on SQLite or PostgreSQL.

The only code that opens history.db (or the history's PostgreSQL database): the history
service writes through it, keyadmin reads through it (`open_history(config, readonly=True)`).

Identity of a reading: (device, ts, seq), seq null stored as -1. `ts` is the proxy's receive
time, written once into the internal bus message and copied unchanged into every
`Pico/<id>/json` publication of that reading, so every copy the broker or a restarted
publisher delivers again carries the same key; a second reading of one device at the very
same float ts does not occur. (device, seq) alone would not do: a v2 seq starts again under
a rotated key, and v1 readings have none. Resends by a device are the publisher's to drop.

Aggregates are kept on insert, from the rows that were new (a copy adds nothing): per
(device, minute) the count and, per field, min, sum and max (mean = sum / count).
"""
from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from services.common import pg
from services.common.config import Config
from services.common.pg import describe_url
from services.common.v1 import FIELDS
from services.history.readings import Row

DAY = 86400.0
MINUTE = 60
MAX_LIMIT = 10000
COLUMNS = tuple(f.lower() for f in FIELDS)  # temp, tempmcu, pulsesig, acel_x, ...

_RAW = (
    "CREATE TABLE IF NOT EXISTS history_raw (device TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL,"
    " seqk BIGINT NOT NULL, protocol TEXT NOT NULL, "
    + ", ".join(f"{c} DOUBLE PRECISION NOT NULL" for c in COLUMNS)
    + ", PRIMARY KEY (device, ts, seqk))"
)
_MINUTES = (
    "CREATE TABLE IF NOT EXISTS history_minutes (device TEXT NOT NULL, minute BIGINT NOT NULL,"
    " n BIGINT NOT NULL, "
    + ", ".join(f"{c}_min DOUBLE PRECISION NOT NULL, {c}_sum DOUBLE PRECISION NOT NULL,"
                f" {c}_max DOUBLE PRECISION NOT NULL" for c in COLUMNS)
    + ", PRIMARY KEY (device, minute))"
)
_INSERT_RAW = (
    f"INSERT INTO history_raw (device, ts, seqk, protocol, {', '.join(COLUMNS)}) VALUES "
    f"({', '.join('?' * (4 + len(COLUMNS)))}) ON CONFLICT DO NOTHING"
)


class HistoryStoreError(Exception):
    """The store cannot be used (database down, bad URL); the message never holds a password."""


class HistoryUnavailable(HistoryStoreError):
    """Read-only open of a store that does not exist yet (the history service never ran)."""


@dataclass(frozen=True)
class Minute:
    """Per-minute aggregate: `minute` is the minute's first second (unix s)."""

    device: str
    minute: int
    n: int
    low: tuple[float, ...]  # per field, FIELDS order
    mean: tuple[float, ...]
    high: tuple[float, ...]

    def as_dict(self) -> dict[str, object]:
        """Like a raw reading (ts, the seven fields as numbers: the means), plus n and each
        field's `<name>_min` / `<name>_max`, so a chart plots either step the same way."""
        doc: dict[str, object] = {"ts": float(self.minute), "seq": None, "n": self.n}
        for i, name in enumerate(FIELDS):
            doc[name] = self.mean[i]
        for i, name in enumerate(FIELDS):
            doc[f"{name}_min"] = self.low[i]
            doc[f"{name}_max"] = self.high[i]
        return doc


# A raw page continues after (ts, seqk) of its last row: unique per device, so nothing is skipped.
Cursor = tuple[float, int]


class HistoryStore(Protocol):
    def add(self, rows: Sequence[Row]) -> int:
        """Store rows in one transaction; returns how many were new (copies are ignored)."""
    def readings(self, device: str, start: float, end: float, limit: int,
                 after: Cursor | None = None) -> list[Row]:
        """Raw rows with start <= ts < end, by (ts, seq), at most `limit`, after a cursor."""
    def minutes(self, device: str, start: float, end: float, limit: int,
                after: int | None = None) -> list[Minute]:
        """Aggregates of the minutes with start <= minute < end, oldest first, after a minute."""
    def prune(self, now: float, raw_days: float, agg_days: float) -> tuple[int, int]:
        """Delete raw rows older than raw_days and aggregates older than agg_days: (raw, minutes)."""
    def close(self) -> None: ...


def cursor_of(row: Row) -> Cursor:
    return row.ts, -1 if row.seq is None else row.seq


def _fold(rows: Sequence[Row]) -> dict[tuple[str, int], list[Any]]:
    """(device, minute) -> [n, mins, sums, maxes] of the given rows."""
    out: dict[tuple[str, int], list[Any]] = {}
    for row in rows:
        key = (row.device, int(row.ts // MINUTE) * MINUTE)
        acc = out.get(key)
        if acc is None:
            out[key] = [1, list(row.values), list(row.values), list(row.values)]
            continue
        acc[0] += 1
        for i, v in enumerate(row.values):
            acc[1][i] = min(acc[1][i], v)
            acc[2][i] += v
            acc[3][i] = max(acc[3][i], v)
    return out


class _SQLHistoryStore:
    """The SQL both backends share; subclasses give the connection and dialect."""

    _LEAST = "MIN"
    _GREATEST = "MAX"

    def __init__(self, readonly: bool) -> None:
        self.readonly = readonly
        self._lock = threading.Lock()

    # --- backend hooks ---
    @contextlib.contextmanager
    def _tx(self) -> Iterator[Any]:
        raise NotImplementedError
        yield

    def _sql(self, text: str) -> str:
        return text

    def _upsert_minute(self) -> str:
        sets = ["n = history_minutes.n + excluded.n"]
        for c in COLUMNS:
            sets.append(f"{c}_min = {self._LEAST}(history_minutes.{c}_min, excluded.{c}_min)")
            sets.append(f"{c}_sum = history_minutes.{c}_sum + excluded.{c}_sum")
            sets.append(f"{c}_max = {self._GREATEST}(history_minutes.{c}_max, excluded.{c}_max)")
        cols = ", ".join(f"{c}_min, {c}_sum, {c}_max" for c in COLUMNS)
        marks = ", ".join("?" * (3 + 3 * len(COLUMNS)))
        return (f"INSERT INTO history_minutes (device, minute, n, {cols}) VALUES ({marks}) "
                f"ON CONFLICT (device, minute) DO UPDATE SET {', '.join(sets)}")

    # --- the store ---
    def add(self, rows: Sequence[Row]) -> int:
        if self.readonly:
            raise HistoryStoreError("the history store is open read-only")
        if not rows:
            return 0
        insert, upsert = self._sql(_INSERT_RAW), self._sql(self._upsert_minute())
        with self._tx() as cur:
            new = []
            for row in rows:
                cur.execute(insert, (row.device, row.ts, cursor_of(row)[1], row.protocol, *row.values))
                if cur.rowcount == 1:
                    new.append(row)
            for (device, minute), (n, low, total, high) in _fold(new).items():
                flat = [x for i in range(len(COLUMNS)) for x in (low[i], total[i], high[i])]
                cur.execute(upsert, (device, minute, n, *flat))
        return len(new)

    def readings(self, device: str, start: float, end: float, limit: int,
                 after: Cursor | None = None) -> list[Row]:
        sql = (f"SELECT ts, seqk, protocol, {', '.join(COLUMNS)} FROM history_raw"
               " WHERE device = ? AND ts >= ? AND ts < ?")
        args: list[Any] = [device, start, end]
        if after is not None:
            sql += " AND (ts > ? OR (ts = ? AND seqk > ?))"
            args += [after[0], after[0], after[1]]
        sql += " ORDER BY ts, seqk LIMIT ?"
        args.append(max(0, min(limit, MAX_LIMIT)))
        with self._tx() as cur:
            cur.execute(self._sql(sql), args)
            found = cur.fetchall()
        return [Row(device=device, ts=float(r[0]), seq=None if r[1] < 0 else int(r[1]), protocol=r[2],
                    values=tuple(float(v) for v in r[3:])) for r in found]

    def minutes(self, device: str, start: float, end: float, limit: int,
                after: int | None = None) -> list[Minute]:
        cols = ", ".join(f"{c}_min, {c}_sum, {c}_max" for c in COLUMNS)
        sql = f"SELECT minute, n, {cols} FROM history_minutes WHERE device = ? AND minute >= ? AND minute < ?"
        args: list[Any] = [device, start, end]
        if after is not None:
            sql += " AND minute > ?"
            args.append(after)
        sql += " ORDER BY minute LIMIT ?"
        args.append(max(0, min(limit, MAX_LIMIT)))
        with self._tx() as cur:
            cur.execute(self._sql(sql), args)
            found = cur.fetchall()
        out = []
        for r in found:
            n = int(r[1])
            vals = [float(v) for v in r[2:]]
            out.append(Minute(device=device, minute=int(r[0]), n=n, low=tuple(vals[0::3]),
                              mean=tuple(s / n for s in vals[1::3]), high=tuple(vals[2::3])))
        return out

    def prune(self, now: float, raw_days: float, agg_days: float) -> tuple[int, int]:
        if self.readonly:
            raise HistoryStoreError("the history store is open read-only")
        with self._tx() as cur:
            cur.execute(self._sql("DELETE FROM history_raw WHERE ts < ?"), (now - raw_days * DAY,))
            raw = cur.rowcount
            cur.execute(self._sql("DELETE FROM history_minutes WHERE minute < ?"),
                        (int(now - agg_days * DAY) // MINUTE * MINUTE,))
            return raw, cur.rowcount


class SQLiteHistoryStore(_SQLHistoryStore):
    """history.db in the state dir (0600, WAL: keyadmin reads while the service writes)."""

    def __init__(self, db: sqlite3.Connection, readonly: bool) -> None:
        super().__init__(readonly)
        self._db = db

    @classmethod
    def open(cls, config: Config, readonly: bool = False) -> SQLiteHistoryStore:
        path = config.history_path
        try:
            if readonly:
                if not path.exists():
                    raise HistoryUnavailable("no history yet (the history service has not stored anything)")
                db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False,
                                     isolation_level=None, timeout=10)
                return cls(db, readonly=True)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.touch(mode=0o600, exist_ok=True)
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses no committed batch's integrity
            db.execute(_RAW + " WITHOUT ROWID")
            db.execute(_MINUTES + " WITHOUT ROWID")
        except sqlite3.Error as exc:
            raise HistoryStoreError(f"cannot open {path.name}: {exc}") from None
        return cls(db, readonly=False)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._db.cursor()
            try:
                cur.execute("BEGIN" if self.readonly else "BEGIN IMMEDIATE")
                yield cur
                cur.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    cur.execute("ROLLBACK")
                raise HistoryStoreError(f"history.db: {exc}") from None
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    cur.execute("ROLLBACK")
                raise
            finally:
                cur.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PostgresHistoryStore(_SQLHistoryStore):
    """MEDSEC_HISTORY_URL: one connection behind a lock, opened again after a failure."""

    _LEAST = "LEAST"
    _GREATEST = "GREATEST"

    def __init__(self, url: str, readonly: bool) -> None:
        super().__init__(readonly)
        self.url = url
        self._db: Any = None

    @classmethod
    def open(cls, config: Config, readonly: bool = False) -> PostgresHistoryStore:
        store = cls(config.history_url, readonly)
        with store._tx() as cur:  # connect now: a bad URL or a down server shows at start
            if not readonly:
                cur.execute(_RAW)
                cur.execute(_MINUTES)
        return store

    def _connect(self) -> Any:
        import psycopg

        try:
            db = pg.connect(self.url, 10)
        except psycopg.Error as exc:
            raise HistoryStoreError(f"cannot connect to {describe_url(self.url)}: "
                                    f"{type(exc).__name__}") from None
        if self.readonly:
            db.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            db.commit()
        return db

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Any]:
        import psycopg

        with self._lock:
            if self._db is None or self._db.closed:
                self._db = self._connect()
            try:
                with self._db.transaction(), self._db.cursor() as cur:
                    yield cur
            except psycopg.Error as exc:
                if self._db.broken or isinstance(exc, psycopg.OperationalError):
                    with contextlib.suppress(psycopg.Error):
                        self._db.close()
                    self._db = None
                raise HistoryStoreError(f"{describe_url(self.url)}: {type(exc).__name__}: "
                                        f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def open_history(config: Config, readonly: bool = False) -> HistoryStore:
    """The configured history store: PostgreSQL for a postgresql:// MEDSEC_HISTORY_URL, else SQLite."""
    url = config.history_url
    if not url:
        return SQLiteHistoryStore.open(config, readonly)
    if urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise HistoryStoreError("MEDSEC_HISTORY_URL must be a postgresql:// URL")
    return PostgresHistoryStore.open(config, readonly)
