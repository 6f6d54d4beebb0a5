"""Setting a station up from this machine: its key pair, its registration, the server's key.

Used by `medsec station run` and `medsec line run`; talks to the key-admin API
with the operator's admin token (the stack's state dir must be readable).
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from Crypto.PublicKey import RSA

from services.common import envelope
from services.common.config import Config
from services.common.state import StateError, admin_token, check_private, mqtt_password, write_secret
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


def api(config: Config, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    try:
        token = admin_token(config)
    except StateError as exc:
        raise SetupError(f"no admin token: {exc}") from None
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(config.admin_url + path, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, {"error": str(exc.reason)}
    except (urllib.error.URLError, OSError) as exc:
        raise SetupError(f"the key-admin API at {config.admin_url} is not reachable "
                         f"({getattr(exc, 'reason', exc)}); is the stack running (`medsec up`)?") from None


def ensure_registered(config: Config, station: str, key: RSA.RsaKey) -> tuple[str, bool]:
    """(broker password, registered now): registers the public key unless it already is."""
    pem = envelope.public_pem(key)
    status, doc = api(config, "GET", f"/stations/{station}")
    if status == 200 and not doc.get("revoked_at"):
        if doc.get("public_key", "").strip() != pem.strip():
            raise SetupError(f"station {station!r} is registered with another key; "
                             f"revoke it first: medsec station revoke {station}")
        try:
            return mqtt_password(config, account(station)), False
        except StateError as exc:
            raise SetupError(str(exc)) from None
    if status not in (200, 404):
        raise SetupError(f"key-admin answered {status}: {doc.get('error') if isinstance(doc, dict) else doc}")
    status, doc = api(config, "POST", "/stations", {"id": station, "public_key": pem})
    if status != 201:
        raise SetupError(f"registering {station!r} failed: {doc.get('error')} (HTTP {status})")
    return doc["mqtt_password"], True


def server_key(config: Config) -> RSA.RsaKey:
    """The dispatch server's public key: from the state dir, else from the key-admin API."""
    try:
        return dkeys.load_server_public(config)
    except FileNotFoundError:
        pass
    status, doc = api(config, "GET", "/dispatch/key")
    if status != 200:
        raise SetupError("the dispatch service has no key yet; is it running (`medsec status`)?")
    return RSA.import_key(doc["public_key"])
