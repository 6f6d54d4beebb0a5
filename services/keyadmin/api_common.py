"""What every key-admin blueprint shares: errors, the token check, JSON bodies, the app's resources."""
from __future__ import annotations

import hmac
from typing import Any

from flask import current_app, g, request

from services.common.config import Config
from services.common.state import StateError, hash_token, read_secret
from services.keyadmin.events import KeyEvents
from services.keystore.store import KeyStore


class ApiError(Exception):
    """An HTTP error answer: `{"error": message}` with `status` (the app's one error handler)."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def config() -> Config:
    return current_app.extensions["medsec.config"]


def store() -> KeyStore:
    return current_app.extensions["medsec.store"]


def events() -> KeyEvents:
    return current_app.extensions["medsec.events"]


def require_token() -> None:
    """Bearer token, compared in constant time with the stored SHA-256.

    The hash is read per request, so `medsec admin-token --rotate` applies at once.
    """
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else ""
    try:
        expected = read_secret(config().admin_token_hash_path).decode().strip()
    except StateError:
        raise ApiError(503, "the admin token is not set up; run `medsec up` once") from None
    if not token or not hmac.compare_digest(hash_token(token), expected):
        raise ApiError(401, "missing or wrong admin token")
    g.actor = f"admin@{request.remote_addr or '-'}"


def actor() -> str:
    return getattr(g, "actor", "admin")


def json_body(allowed: set[str] | None = None, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object; 415 for another media type, 400 for anything but an object."""
    if optional and not request.get_data(cache=True):
        return {}
    if not request.is_json:
        raise ApiError(415, "send JSON with Content-Type: application/json")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    if allowed is not None:
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ApiError(400, f"unknown fields: {', '.join(unknown)[:200]}")
    return body
