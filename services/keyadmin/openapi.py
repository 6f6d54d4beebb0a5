"""The OpenAPI 3 document of the key-admin API (served at /api/v1/openapi.json).

The one source for every path of every blueprint, written by hand next to the
code; tests/keyadmin/test_openapi.py checks that it names exactly the app's
routes, and schemathesis checks the answers against it. Each operation's scope
(`x-scope`, its security and its 403) comes from scopes.ROUTES, the table the
token check reads.
"""
from __future__ import annotations

import copy
from typing import Any

from services.common.config import DEVICE_ID_RE
from services.common.v1 import FIELDS
from services.keyadmin import scopes
from services.keystore.models import SCOPES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in codes}


SECURE = [{"bearerAuth": []}]
DEVICE_ID = {"name": "device_id", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": DEVICE_ID_RE.pattern}}
_NUM_OR_NULL = {"type": "number", "nullable": True}
_STATION = {"type": "object", "required": ["id", "fingerprint", "public_key", "created_at"], "properties": {
    "id": {"type": "string"}, "fingerprint": {"type": "string"}, "public_key": {"type": "string"},
    "created_at": {"type": "number"}, "revoked_at": _NUM_OR_NULL}}
_STATION_ID = {"name": "station_id", "in": "path", "required": True, "schema": {"type": "string"}}

_RANGE = [{"name": name, "in": "query", "required": False, "description": text,
           "schema": {"type": "number", "minimum": 0, "maximum": 1e11}}
          for name, text in (("from", "unix seconds, inclusive (default: `to` minus one hour)"),
                             ("to", "unix seconds, exclusive (default: now)"))]
_STEP = {"name": "step", "in": "query", "required": False,
         "schema": {"type": "string", "enum": ["raw", "1m"], "default": "raw"}}
_FORMAT = {"name": "format", "in": "query", "required": False,
           "schema": {"type": "string", "enum": ["json", "csv"], "default": "json"}}
_CURSOR = {"name": "cursor", "in": "query", "required": False, "description": "`next` of the previous page",
           "schema": {"type": "string", "pattern": "^(r[0-9.e+-]+_-?[0-9]+|m[0-9]+)$"}}


_NEXT_HEADER = {"schema": {"type": "string"}, "description": "CSV: cursor of the next page"}


def _limit(default: int, high: int) -> dict[str, Any]:
    return {"name": "limit", "in": "query", "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": high, "default": default}}


_READING = {"type": "object", "required": ["ts", "seq", *FIELDS], "properties": {
    "ts": {"type": "number"}, "seq": {"type": "integer", "nullable": True},
    "protocol": {"type": "string", "enum": ["v1", "v2"]},
    "n": {"type": "integer", "description": "step 1m: readings in the minute"},
    **{f: {"type": "number", "description": "step 1m: the minute's mean"} for f in FIELDS}},
    "additionalProperties": {"type": "number", "description": "step 1m: <field>_min, <field>_max"}}

PATHS: dict[str, Any] = {
    "/devices": {
        "get": {"summary": "List devices (never secrets)", "operationId": "listDevices", "security": SECURE,
                "responses": {"200": _json(_ref("DeviceList"), "The devices"), **_errors(401)}},
        "post": {"summary": "Register a device; the answer is the only time its credentials are shown",
                 "operationId": "addDevice", "security": SECURE,
                 "requestBody": {"required": True,
                                 "content": {"application/json": {"schema": _ref("NewDevice")}}},
                 "responses": {"201": _json(_ref("DeviceWithCredentials"), "Registered"),
                               **_errors(400, 401, 409, 413, 415)}},
    },
    "/devices/import": {
        "post": {"summary": "Import a legacy key file (JSON lines {id, key, iv}); all or nothing",
                 "operationId": "importDevices", "security": SECURE,
                 "requestBody": {"required": True, "content": {
                     "application/x-ndjson": {"schema": {"type": "string"}},
                     "text/plain": {"schema": {"type": "string"}}}},
                 "responses": {"201": _json(_ref("ImportResult"), "Imported"),
                               **_errors(400, 401, 409, 413)}},
    },
    "/devices/{device_id}": {
        "parameters": [DEVICE_ID],
        "get": {"summary": "A device: state, last seen, counters, credential generations",
                "operationId": "showDevice", "security": SECURE,
                "responses": {"200": _json(_ref("Device"), "The device"), **_errors(400, 401, 404)}},
        "delete": {"summary": "Revoke a device: its live connections close within 1 s",
                   "operationId": "revokeDevice", "security": SECURE,
                   "responses": {"200": _json(_ref("Device"), "Revoked"), **_errors(400, 401, 404, 409)}},
    },
    "/devices/{device_id}/rotate": {
        "parameters": [DEVICE_ID],
        "post": {"summary": "New credentials; the old ones stay valid until first use of the new ones"
                            " or the end of the grace period",
                 "operationId": "rotateDevice", "security": SECURE,
                 "requestBody": {"required": False,
                                 "content": {"application/json": {"schema": _ref("RotateRequest")}}},
                 "responses": {"201": _json(_ref("DeviceWithCredentials"), "Rotated"),
                               **_errors(400, 401, 404, 409, 415)}},
    },
    # --- history (history_api.py) ---
    "/devices/{device_id}/readings": {
        "parameters": [DEVICE_ID],
        "get": {"summary": "A device's readings by time range: raw, or per-minute min/mean/max; JSON or CSV",
                "operationId": "deviceReadings", "security": SECURE,
                "parameters": [*_RANGE, _STEP, _FORMAT, _limit(1000, 10000), _CURSOR],
                "responses": {"200": {"description": "One page, oldest first (CSV: header row; the next"
                                                     " page's cursor in X-Next-Cursor)",
                                      "headers": {"X-Next-Cursor": _NEXT_HEADER},
                                      "content": {"application/json": {"schema": _ref("ReadingsPage")},
                                                  "text/csv": {"schema": {"type": "string"}}}},
                              **_errors(400, 401, 503)}},
    },
    "/devices/{device_id}/fhir": {
        "parameters": [DEVICE_ID],
        "get": {"summary": "FHIR R4 export of a device's readings: a Bundle (collection) of the Device and"
                           " Observations (docs/history.md); link `next` names the next page",
                "operationId": "deviceFhir", "security": SECURE,
                "parameters": [*_RANGE, _limit(500, 2000), _CURSOR],
                "responses": {"200": {"description": "A FHIR Bundle", "content": {
                    "application/fhir+json": {"schema": {
                        "type": "object", "required": ["resourceType", "type", "entry"],
                        "properties": {"resourceType": {"type": "string", "enum": ["Bundle"]},
                                       "type": {"type": "string"},
                                       "entry": {"type": "array", "items": {"type": "object"}}}}}}},
                              **_errors(400, 401, 503)}},
    },
    "/audit": {
        "get": {"summary": "The audit log (append-only, hash-chained)", "operationId": "audit",
                "security": SECURE,
                "parameters": [
                    {"name": "after", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 0, "maximum": 2**62}},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
                "responses": {"200": _json(_ref("AuditPage"), "Entries after `after`, oldest first"),
                              **_errors(400, 401)}},
    },
    "/audit/verify": {
        "get": {"summary": "Check the audit log's keyed hash chain (the key derives from the master key,"
                           " so the check runs here)", "operationId": "auditVerify", "security": SECURE,
                "responses": {"200": _json(_ref("AuditCheck"), "Whether the chain is intact, and where not"),
                              **_errors(401)}},
    },
    # --- key-admin API tokens (tokens_api.py) ---
    "/tokens": {
        "get": {"summary": "List tokens: names, scopes, times (never a value)", "operationId": "listTokens",
                "security": SECURE, "responses": {"200": _json({"type": "object", "required": ["tokens"],
                "properties": {"tokens": {"type": "array", "items": _ref("Token")}}}, "The tokens"),
                **_errors(401)}},
        "post": {"summary": "Create a token; the answer is the only time its value is shown",
                 "operationId": "createToken", "security": SECURE,
                 "requestBody": {"required": True, "content": {"application/json": {"schema": {
                     "type": "object", "required": ["name", "scope"], "additionalProperties": False,
                     "properties": {"name": {"type": "string", "pattern": DEVICE_ID_RE.pattern},
                                    "scope": {"type": "string", "enum": list(SCOPES)}}}}}},
                 "responses": {"201": _json({"allOf": [_ref("Token"), {
                     "type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}}]},
                     "Created"),
                     **_errors(400, 401, 409, 415)}},
    },
    "/tokens/{name}": {
        "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        "delete": {"summary": "Revoke a token: the next request with it gets 401",
                   "operationId": "revokeToken",
                   "security": SECURE, "responses": {"200": _json(_ref("Token"), "Revoked"),
                                                     **_errors(400, 401, 404)}},
    },
    "/healthz": {
        "get": {"summary": "Liveness (no token)", "operationId": "healthz", "security": [],
                "responses": {"200": _json({"type": "object", "required": ["status"],
                                            "properties": {"status": {"type": "string"}}}, "Alive")}},
    },
    "/metrics": {
        "get": {"summary": "Prometheus text (no token)", "operationId": "metrics", "security": [],
                "responses": {"200": {"description": "Metrics",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}}},
    },
    "/openapi.json": {
        "get": {"summary": "This document (no token)", "operationId": "openapi", "security": [],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3 document")}},
    },
    # --- dispatch stations (stations_api.py) ---
    "/stations": {
        "get": {"summary": "List dispatch stations and their public keys", "operationId": "listStations",
                "security": SECURE, "responses": {"200": _json({"type": "object", "required": ["stations"],
                "properties": {"stations": {"type": "array", "items": _STATION}}}, "The stations"),
                **_errors(401)}},
        "post": {"summary": "Register a station's RSA public key (>= 3072 bits); creates its broker"
                            " account, whose password the answer shows this once",
                 "operationId": "addStation", "security": SECURE,
                 "requestBody": {"required": True, "content": {"application/json": {"schema": {
                     "type": "object", "required": ["id", "public_key"], "additionalProperties": False,
                     "properties": {"id": {"type": "string"}, "public_key": {"type": "string"}}}}}},
                 "responses": {"201": _json({"allOf": [_STATION, {"type": "object", "properties": {
                     "mqtt_account": {"type": "string"}, "mqtt_password": {"type": "string"}}}]},
                     "Registered"),
                     **_errors(400, 401, 409, 415, 503)}},
    },
    "/stations/{station_id}": {
        "parameters": [_STATION_ID],
        "get": {"summary": "One station", "operationId": "showStation", "security": SECURE,
                "responses": {"200": _json(_STATION, "The station"), **_errors(401, 404)}},
        "delete": {"summary": "Revoke a station: its key and broker account stop working, and its"
                              " broker connection is closed",
                   "operationId": "revokeStation", "security": SECURE,
                   "responses": {"200": _json(_STATION, "Revoked"), **_errors(401, 404, 503)}},
    },
    "/dispatch/key": {
        "get": {"summary": "The dispatch server's public key", "operationId": "dispatchKey",
                "security": SECURE, "responses": {"200": _json({"type": "object", "properties": {
                    "id": {"type": "string"}, "public_key": {"type": "string"}}}, "The key"),
                    **_errors(401, 404)}},
    },
}

_PRINTABLE16 = {"type": "string", "minLength": 16, "maxLength": 16, "pattern": "^[ -~]{16}$"}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "string"},
        "lines": {"type": "array", "items": {"type": "object", "properties": {
            "line": {"type": "integer"}, "error": {"type": "string"}}}}}},
    "Credential": {"type": "object", "required": ["generation", "state", "created_at"], "properties": {
        "generation": {"type": "integer", "minimum": 1},
        "state": {"type": "string", "enum": ["current", "previous", "expired"]},
        "created_at": {"type": "number"}, "expires_at": _NUM_OR_NULL, "confirmed_at": _NUM_OR_NULL}},
    "Device": {"type": "object",
               "required": ["id", "protocol", "state", "created_at", "readings", "rejected", "credentials"],
               "properties": {
                   "id": {"type": "string", "pattern": DEVICE_ID_RE.pattern},
                   "protocol": {"type": "string", "enum": ["v1", "v2"]},
                   "state": {"type": "string", "enum": ["active", "rotating", "revoked"]},
                   "created_at": {"type": "number"}, "revoked_at": _NUM_OR_NULL, "last_seen": _NUM_OR_NULL,
                   "readings": {"type": "integer"}, "rejected": {"type": "integer"},
                   "connections": {"type": "integer"},
                   "credentials": {"type": "array", "items": _ref("Credential")}}},
    "DeviceWithCredentials": {"allOf": [_ref("Device"), {"type": "object", "properties": {
        "key": {**_PRINTABLE16, "description": "v1 AES-128 key (16 ASCII characters)"},
        "iv": {**_PRINTABLE16, "description": "v1 CBC IV (16 ASCII characters)"},
        "master_key": {"type": "string", "description": "v2 master key, hex"},
        "key_id": {"type": "string", "description": "v2 key id, hex"}}}]},
    "DeviceList": {"type": "object", "required": ["devices"],
                   "properties": {"devices": {"type": "array", "items": _ref("Device")}}},
    "NewDevice": {"oneOf": [
        {"type": "object", "required": ["id"], "additionalProperties": False, "properties": {
            "id": {"type": "string", "pattern": DEVICE_ID_RE.pattern},
            "protocol": {"type": "string", "enum": ["v1"], "default": "v1"},
            "key": {**_PRINTABLE16, "description": "generated when absent"},
            "iv": {**_PRINTABLE16, "description": "generated when absent"}}},
        {"type": "object", "required": ["id", "protocol"], "additionalProperties": False, "properties": {
            "id": {"type": "string", "pattern": DEVICE_ID_RE.pattern},
            "protocol": {"type": "string", "enum": ["v2"]}},
         "description": "v2 credentials are always generated by the gateway"}]},
    "RotateRequest": {"type": "object", "additionalProperties": False, "properties": {
        "grace": {"type": "number", "minimum": 0, "maximum": 90 * 24 * 3600, "default": 86400,
                  "description": "seconds the old credentials stay valid (until first use of the new)"},
        "key": _PRINTABLE16, "iv": _PRINTABLE16}},
    "ImportResult": {"type": "object", "required": ["imported", "devices"], "properties": {
        "imported": {"type": "integer"}, "devices": {"type": "array", "items": {"type": "string"}}}},
    "AuditEntry": {"type": "object", "required": ["seq", "ts", "actor", "action", "prev", "hash"],
                   "properties": {
                       "seq": {"type": "integer"}, "ts": {"type": "number"}, "actor": {"type": "string"},
                       "action": {"type": "string"}, "device": {"type": "string", "nullable": True},
                       "detail": {"type": "object"}, "prev": {"type": "string"}, "hash": {"type": "string"}}},
    "AuditCheck": {"type": "object", "required": ["intact", "entries"], "properties": {
        "intact": {"type": "boolean"}, "entries": {"type": "integer"},
        "head": {"type": "object", "nullable": True, "properties": {
            "seq": {"type": "integer"}, "hash": {"type": "string"}}},
        "broken": {"type": "object", "nullable": True, "properties": {
            "seq": {"type": "integer"}, "action": {"type": "string"},
            "device": {"type": "string", "nullable": True}, "reason": {"type": "string"}}}}},
    "Token": {"type": "object", "required": ["name", "scope"], "properties": {
        "name": {"type": "string"}, "scope": {"type": "string", "enum": list(SCOPES)},
        "created_at": _NUM_OR_NULL, "revoked_at": _NUM_OR_NULL,
        "integrity": {"type": "string", "enum": ["ok", "failed"]}}},
    "ReadingsPage": {"type": "object", "required": ["device", "from", "to", "step", "items", "next"],
                     "properties": {"device": {"type": "string"}, "from": {"type": "number"},
                                    "to": {"type": "number"},
                                    "step": {"type": "string", "enum": ["raw", "1m"]},
                                    "items": {"type": "array", "items": _READING},
                                    "next": {"type": "string", "nullable": True}}},
    "AuditPage": {"type": "object", "required": ["entries"], "properties": {
        "entries": {"type": "array", "items": _ref("AuditEntry")},
        "next": {"type": "integer", "nullable": True}}},
}

_ERROR_TEXT = {400: "Bad input", 401: "Missing, unknown or revoked token",
               403: "The token's scope is below the one the operation needs (x-scope)", 404: "Not found",
               409: "Conflict (exists, revoked, or credentials in use)", 413: "Body too large",
               415: "Unsupported media type (send JSON)",
               503: "Not done in full: the admin token is not set up, the change is stored but the broker "
                    "did not take it, or the history store is not there yet (the message says which)"}


_SCOPE_TEXT = ("Bearer token with a scope. Scopes are ordered, each holding the ones below it: "
               "admin (tokens, audit log) > manage (add, rotate, revoke, import devices; stations) > "
               "read (devices, their state and history) > stations:read (station and dispatch public keys). "
               "Each operation's `x-scope` names the scope it needs.")


def _scoped(paths: dict[str, Any]) -> dict[str, Any]:
    """Each operation's scope from scopes.ROUTES, the table the token check uses: `x-scope`,
    its security and its 403 answer. An operation the table does not list is an error here."""
    paths = copy.deepcopy(paths)
    for path, item in paths.items():
        for method, op in item.items():
            if method == "parameters":
                continue
            scope = scopes.ROUTES[(method.upper(), path)]
            op["x-scope"] = scope
            if scope == scopes.PUBLIC:
                op["security"] = []
            else:
                op["security"] = SECURE
                op["description"] = f"Needs a token of scope `{scope}` (or higher)."
                op["responses"].update(_errors(403))
    return paths


def spec() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "medsec key administration", "version": "1.0.0",
                 "description": "Register, rotate and revoke the devices of a medsec gateway."},
        "servers": [{"url": "/api/v1"}],
        "security": SECURE,
        "paths": _scoped(PATHS),
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "description": _SCOPE_TEXT}},
            "schemas": SCHEMAS,
            "responses": {f"E{code}": _json(_ref("Error"), text) for code, text in _ERROR_TEXT.items()},
        },
    }
