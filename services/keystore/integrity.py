"""Row MACs: the fields that decide whether a key may be used, authenticated with the master key.

Someone who can write the database but does not hold the master key could
otherwise un-revoke a device, extend an expired credential, reset a v2 replay
window or mint a key-admin token. Every store write that changes these fields
writes the row's MAC (`Sealer.row_mac` over the tuples below); every read that
uses them checks it. A mismatch fails closed: the device is unusable (its
credentials count as revoked, its v2 window is refused, the API shows state
`integrity_failed`), the token is refused, and an `event=integrity_failed` line
is logged once per bad row and counted (`Failures`).

Limit: a MAC binds a row's values, not its age. Putting back an older copy of a
row together with its MAC (a rollback) is not caught here; the keyed audit chain
records every revocation and rotation.
"""
from __future__ import annotations

import hmac
import logging
import threading

from services.common.logs import kv
from services.keystore.models import KeyStoreError
from services.keystore.sealing import Sealer

log = logging.getLogger("medsec.keystore")

REASON = "integrity_failed"


class IntegrityFailed(KeyStoreError):
    """A protected row does not match its MAC: edited without the master key. Refused."""


def device_fields(device_id: str, protocol: str, revoked_at: float | None) -> tuple:
    return (device_id, protocol, revoked_at)


def credential_fields(device_id: str, generation: int, created_at: float, expires_at: float | None,
                      confirmed_at: float | None) -> tuple:
    return (device_id, generation, created_at, expires_at, confirmed_at)


def window_fields(key_id: str, device_id: str, window: str) -> tuple:
    return (key_id, device_id, window)


def token_fields(name: str, scope: str, digest: str, created_at: float, revoked_at: float | None) -> tuple:
    return (name, scope, digest, created_at, revoked_at)


def _num(value: object) -> object:
    """Numbers as the store hands them back: PostgreSQL and SQLite agree on floats, not on ints."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def mac(sealer: Sealer, table: str, fields: tuple) -> str:
    return sealer.row_mac(table, tuple(map(_num, fields)))


def intact(sealer: Sealer, table: str, fields: tuple, stored: str | None) -> bool:
    return stored is not None and hmac.compare_digest(mac(sealer, table, fields), stored)


class Failures:
    """Rows found failing: logged once each (per stored MAC), counted for metrics."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str, str | None]] = set()
        self._lock = threading.Lock()
        self.count = 0

    def report(self, table: str, key: str, device: str | None, stored: str | None) -> None:
        with self._lock:
            if (table, key, stored) in self._seen:
                return
            self._seen.add((table, key, stored))
            self.count += 1
        log.error(kv(event=REASON, table=table, row=key, device=device or "-",
                     detail="row changed without the master key; refused"))
