"""Setting a station up from this machine: its key pair, its registration, the server's key.

Used by `medsec station run` and `medsec line run`; talks to the key-admin API
with the operator's admin token (the stack's state dir must be readable).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from Crypto.PublicKey import RSA

from services.common import envelope
from services.common.adminclient import AdminApiError, AdminClient, error_message, quote
from services.common.config import Config
from services.common.state import StateError, check_private, mqtt_password, write_secret
from services.dispatch import keys as dkeys
from services.dispatch.topics import account


class SetupError(Exception):
    """Something the operator must fix (stack down, key mismatch); the message says what."""


def station_dir(config: Config, station: str) -> Path:
    return dkeys.dispatch_dir(config) / "stations" / station


def station_key(config: Config, station: str) -> tuple[RSA.RsaKey, bool]:
    """(key, generated): the station's private key, generated (3072-bit) on first use, 0600."""
    path = station_dir(config, station) / "key.pem"
    if path.exists():
        check_private(path)
        return RSA.import_key(path.read_bytes()), False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = dkeys.generate_key()
    write_secret(path, envelope.private_pem(key))
    return key, True


def api(config: Config, method: str, path: str, body: Any = None,
        token: str | None = None) -> tuple[int, Any]:
    """(status, answer) of the key-admin API with `token`, else the operator's token from the state
    dir; SetupError if unreachable."""
    try:
        client = AdminClient(config.admin_url, token) if token else AdminClient.from_config(config)
        return client.request(method, path, body)
    except AdminApiError as exc:
        raise SetupError(exc.message) from None


def ensure_registered(config: Config, station: str, key: RSA.RsaKey,
                      token: str | None = None) -> tuple[str, bool]:
    """(broker password, registered now): registers the public key unless it already is."""
    pem = envelope.public_pem(key)
    status, doc = api(config, "GET", f"/stations/{quote(station)}", token=token)
    if status == 200 and not doc.get("revoked_at"):
        if doc.get("public_key", "").strip() != pem.strip():
            raise SetupError(f"station {station!r} is registered with another key; "
                             f"revoke it first: medsec station revoke {station}")
        try:
            return mqtt_password(config, account(station)), False
        except StateError as exc:
            raise SetupError(str(exc)) from None
    if status not in (200, 404):
        raise SetupError(f"key-admin answered {status}: {error_message(doc, status)}")
    status, doc = api(config, "POST", "/stations", {"id": station, "public_key": pem}, token=token)
    if status != 201:
        raise SetupError(f"registering {station!r} failed: {error_message(doc, status)} (HTTP {status})")
    return doc["mqtt_password"], True


def server_key(config: Config, token: str | None = None) -> RSA.RsaKey:
    """The dispatch server's public key: from the state dir, else from the key-admin API."""
    try:
        return dkeys.load_server_public(config)
    except FileNotFoundError:
        pass
    status, doc = api(config, "GET", "/dispatch/key", token=token)
    if status != 200:
        raise SetupError("the dispatch service has no key yet; is it running (`medsec status`)?")
    return RSA.import_key(doc["public_key"])
