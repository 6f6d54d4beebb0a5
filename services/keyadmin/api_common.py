"""What every key-admin blueprint shares: errors, the token check, JSON bodies, the app's resources."""
from __future__ import annotations

import hmac
from typing import Any

from flask import current_app, g, request

from services.common.config import Config
from services.common.state import StateError, hash_token, read_secret
from services.keyadmin import scopes
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


OPERATOR = "operator"  # the name of the operator's token (secrets/admin.token)
PREFIX = "/api/v1"


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


def _holder(token: str) -> tuple[str, str]:
    """(name, scope) of a presented token; ApiError 401 when it is missing, unknown or revoked.

    The operator's token is checked against admin.token.sha256, read per request (so
    `medsec admin-token --rotate` applies at once); every other token against the store."""
    if not token:
        raise ApiError(401, "missing token (send Authorization: Bearer <token>)")
    digest = hash_token(token)
    try:
        operator = read_secret(config().admin_token_hash_path).decode().strip()
    except StateError:
        operator = ""
    if operator and hmac.compare_digest(digest, operator):
        return OPERATOR, "admin"
    found = store().token_by_hash(digest)
    if found is None or found.revoked_at is not None or not found.intact:
        if not operator:
            raise ApiError(503, "the admin token is not set up; run `medsec up` once")
        raise ApiError(401, "unknown or revoked token")
    return found.name, found.scope


def authorise() -> None:
    """Before every request: the route's scope (scopes.ROUTES), the token's name as the actor.

    401 without a valid token, 403 when its scope is below the route's; unknown routes and
    methods are left to Flask (404, 405)."""
    rule = request.url_rule
    if rule is None or request.method == "OPTIONS":
        return
    route = rule.rule[len(PREFIX):] if rule.rule.startswith(PREFIX) else rule.rule
    route, need = scopes.lookup(request.method, route) or (route, None)
    if need == scopes.PUBLIC:
        return
    name, held = _holder(_bearer())
    g.actor, g.scope = name, held
    if need is None or not scopes.allows(held, need):
        raise ApiError(403, f"this token's scope is {held}; {request.method} {route} "
                            f"needs {need or 'a scope it does not list'}")


def actor() -> str:
    """The name of the token that made this request (never its value): audit and logs."""
    return getattr(g, "actor", "-")


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
