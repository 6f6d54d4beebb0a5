"""Who may call what: every route's scope, in the one table the token check and the OpenAPI
document both read (api_common.authorise, openapi.spec).

Scopes are ordered; each holds the ones below it:

    admin          tokens (create, list, revoke) and the audit log, and everything below
    manage         add, rotate, revoke, import devices; register and revoke stations
    read           list and show devices and their state, their history (readings, FHIR export)
    stations:read  station public keys and the dispatch key only (what dispatch needs)

The audit log is `admin`: it names every token holder and when they acted, which a dashboard
that watches vitals does not need. A route missing from ROUTES is refused (fail closed).
"""
from __future__ import annotations

import re

from services.keystore.models import SCOPES

PUBLIC = "public"  # no token: health, metrics, this document
RANK = {scope: rank for rank, scope in enumerate(SCOPES)}

# (method, path as in the OpenAPI document) -> the scope it needs.
ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/devices"): "read",
    ("POST", "/devices"): "manage",
    ("POST", "/devices/import"): "manage",
    ("GET", "/devices/{device_id}"): "read",
    ("DELETE", "/devices/{device_id}"): "manage",
    ("POST", "/devices/{device_id}/rotate"): "manage",
    ("GET", "/devices/{device_id}/readings"): "read",
    ("GET", "/devices/{device_id}/fhir"): "read",
    ("GET", "/stations"): "stations:read",
    ("POST", "/stations"): "manage",
    ("GET", "/stations/{station_id}"): "stations:read",
    ("DELETE", "/stations/{station_id}"): "manage",
    ("GET", "/dispatch/key"): "stations:read",
    ("GET", "/audit"): "admin",
    ("GET", "/audit/verify"): "admin",
    ("GET", "/tokens"): "admin",
    ("POST", "/tokens"): "admin",
    ("DELETE", "/tokens/{name}"): "admin",
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
}


def shape(path: str) -> str:
    """A path with its parameters blanked: Flask's <x> and OpenAPI's {x} compare equal."""
    return re.sub(r"<[^>]+>|{[^}]+}", "{}", path)


_BY_SHAPE = {(method, shape(path)): (path, scope) for (method, path), scope in ROUTES.items()}


def lookup(method: str, rule: str) -> tuple[str, str] | None:
    """(documented path, scope needed) of route `rule` (Flask form, without /api/v1) for `method`;
    None if the table does not list it."""
    return _BY_SHAPE.get(("GET" if method == "HEAD" else method, shape(rule)))


def needed(method: str, rule: str) -> str | None:
    found = lookup(method, rule)
    return found[1] if found else None


def allows(held: str, need: str) -> bool:
    return need == PUBLIC or RANK.get(held, -1) >= RANK[need]
