"""The key store's records and domain errors (never HTTP: the key-admin app maps them).

Rotation keeps several credentials per device (generations): the newest is
current; an older one stays valid until its `expires_at` (end of the grace
period), which is cut short when the device first uses the newer one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


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


class StationExists(KeyStoreError):
    """An active station has this id: revoke it before registering a new key."""


class StationNotFound(KeyStoreError):
    """No station (or, to revoke, no active station) has this id."""


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
    # False when a protected row of the device fails its MAC (integrity.py): unusable.
    intact: bool = True

    def state(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if not self.intact:
            return "integrity_failed"
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
            "integrity": "ok" if self.intact else "failed",
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
class Station:
    """A dispatch station's public key (public: listed and shown as is)."""

    id: str
    public_key: str
    fingerprint: str
    created_at: float
    revoked_at: float | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "fingerprint": self.fingerprint, "public_key": self.public_key,
                "created_at": self.created_at, "revoked_at": self.revoked_at}


SCOPES = ("stations:read", "read", "manage", "admin")


@dataclass(frozen=True)
class Token:
    """A key-admin API token: only its SHA-256 is stored; the value is shown once, at creation."""

    name: str
    scope: str
    created_at: float
    revoked_at: float | None
    intact: bool = True

    def to_json(self) -> dict[str, Any]:
        """Never the value nor its hash."""
        return {"name": self.name, "scope": self.scope, "created_at": self.created_at,
                "revoked_at": self.revoked_at, "integrity": "ok" if self.intact else "failed"}


class TokenExists(KeyStoreError):
    """An active token has this name: revoke it first."""


class TokenNotFound(KeyStoreError):
    """No (or, to revoke, no active) token has this name."""
