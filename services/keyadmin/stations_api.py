"""Station public keys of the dispatch workflow, on the key-admin API (a Flask blueprint).

    POST   /api/v1/stations        {"id", "public_key": PEM (RSA >= 3072 bits)}
                                   -> 201 {"id", "fingerprint", ..., "mqtt_account", "mqtt_password"}
                                   (the broker password is shown this once)
    GET    /api/v1/stations        {"stations": [{"id", "fingerprint", "public_key", "created_at"}]}
    GET    /api/v1/stations/<id>   one station (public keys are public; no secret is ever listed)
    DELETE /api/v1/stations/<id>   revoke: dispatch refuses its envelopes, its broker account goes
    GET    /api/v1/dispatch/key    the dispatch server's public key (what stations seal for)

Stored in its own table, `dispatch_stations`, in the key store file (auth and
keyadmin are the only processes that open it); changes go to the audit log.
Registered in services/auth/keyadmin.py BLUEPRINTS.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Blueprint, current_app, jsonify

from services.auth import api_common as api
from services.auth.api_common import ApiError
from services.broker import BrokerError
from services.common import envelope
from services.common.config import Config
from services.common.logs import kv
from services.dispatch import station_accounts
from services.dispatch.keys import server_public_path
from services.dispatch.topics import SERVER_ID, account, valid_station_id

log = logging.getLogger("medsec.keyadmin.stations")

SCHEMA = """
CREATE TABLE IF NOT EXISTS dispatch_stations (
    id TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
)
"""


def fingerprint(pem: str) -> str:
    der = envelope.load_public_key(pem).export_key(format="DER")
    return "SHA256:" + hashlib.sha256(der).hexdigest()


class StationStore:
    """The `dispatch_stations` table. One short-lived connection per call (threads of the WSGI server)."""

    def __init__(self, path: os.PathLike[str] | str) -> None:
        self.path = str(path)
        created = not os.path.exists(self.path)
        with self._connect() as db:
            db.execute(SCHEMA)
        if created:
            os.chmod(self.path, 0o600)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            # IMMEDIATE: the check-then-write of add() is atomic against a concurrent request.
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    @staticmethod
    def _row(row: sqlite3.Row) -> dict[str, Any]:
        return {k: row[k] for k in ("id", "fingerprint", "public_key", "created_at", "revoked_at")}

    def add(self, station: str, pem: str) -> dict[str, Any]:
        fp = fingerprint(pem)
        with self._connect() as db:
            row = db.execute("SELECT revoked_at FROM dispatch_stations WHERE id = ?", (station,)).fetchone()
            if row is not None and row["revoked_at"] is None:
                raise ApiError(409, f"station {station!r} is already registered; revoke it first")
            db.execute(
                "INSERT OR REPLACE INTO dispatch_stations"
                " (id, public_key, fingerprint, created_at, revoked_at) VALUES (?, ?, ?, ?, NULL)",
                (station, pem, fp, time.time()),
            )
        return self.get(station)

    def get(self, station: str) -> dict[str, Any]:
        with self._connect() as db:
            row = db.execute("SELECT * FROM dispatch_stations WHERE id = ?", (station,)).fetchone()
        if row is None:
            raise ApiError(404, f"no station {station!r}")
        return self._row(row)

    def list(self) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM dispatch_stations WHERE revoked_at IS NULL ORDER BY id"
            ).fetchall()
        return [self._row(r) for r in rows]

    def revoke(self, station: str) -> dict[str, Any]:
        with self._connect() as db:
            cur = db.execute(
                "UPDATE dispatch_stations SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), station),
            )
        if cur.rowcount == 0:
            raise ApiError(404, f"no active station {station!r}")
        return self.get(station)


def _audit(action: str, station: str, detail: dict[str, Any]) -> None:
    store = current_app.extensions.get("medsec.store")
    if store is not None:
        store.append_audit(api.actor(), action, f"station:{station}", detail)


@contextmanager
def _broker_change(station: str, done: str, then: str) -> Iterator[None]:
    """A broker that refuses the login change: say what did happen (the key store and the
    broker file are updated; the running broker takes it at its next start)."""
    try:
        yield
    except BrokerError as exc:
        log.warning(kv(event="station_broker_change_failed", station=station, error=str(exc)))
        raise ApiError(503, f"station {station!r} is {done} but {exc}; {then}") from None


def create_blueprint(config: Config) -> Blueprint:
    bp = Blueprint("stations", __name__)
    store = StationStore(config.keystore_path)

    @bp.before_request
    def _authorise() -> None:
        api.require_token()

    @bp.post("/stations")
    def add_station() -> Any:
        doc = api.json_body({"id", "public_key"})
        station, pem = doc.get("id"), doc.get("public_key")
        if not valid_station_id(station):
            raise ApiError(400, f"id must be 1-64 of [A-Za-z0-9_.-] and not {SERVER_ID!r}")
        if not isinstance(pem, str):
            raise ApiError(400, "public_key must be a PEM string")
        try:
            envelope.load_public_key(pem)
        except ValueError as exc:
            raise ApiError(400, f"public_key: {exc}") from None
        info = store.add(station, pem)
        _audit("station_added", station, {"fingerprint": info["fingerprint"]})
        log.info(kv(event="station_added", station=station, fingerprint=info["fingerprint"]))
        with _broker_change(station, "registered", "the broker takes the login at its next start "
                            f"(`medsec mqtt-password {account(station)}` prints the password)"):
            password, _ = station_accounts.provision(config, station)
        return jsonify({**info, "mqtt_account": account(station), "mqtt_password": password}), 201

    @bp.get("/stations")
    def list_stations() -> Any:
        return jsonify({"stations": store.list()})

    @bp.get("/stations/<station>")
    def get_station(station: str) -> Any:
        return jsonify(store.get(station))

    @bp.delete("/stations/<station>")
    def revoke_station(station: str) -> Any:
        info = store.revoke(station)
        _audit("station_revoked", station, {})
        log.info(kv(event="station_revoked", station=station))
        with _broker_change(station, "revoked", "its envelopes are refused; the broker drops the login "
                            "at its next start"):
            station_accounts.deprovision(config, station)
        return jsonify(info)

    @bp.get("/dispatch/key")
    def server_key() -> Any:
        path = server_public_path(config)
        if not path.exists():
            raise ApiError(404, "the dispatch service has not generated its key yet")
        return jsonify({"id": SERVER_ID, "public_key": path.read_text()})

    return bp


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in codes}


_SECURE = [{"bearerAuth": []}]
_NUM_OR_NULL = {"type": "number", "nullable": True}
_STATION = {"type": "object", "required": ["id", "fingerprint", "public_key", "created_at"], "properties": {
    "id": {"type": "string"}, "fingerprint": {"type": "string"}, "public_key": {"type": "string"},
    "created_at": {"type": "number"}, "revoked_at": _NUM_OR_NULL}}
_STATION_ID = {"name": "station_id", "in": "path", "required": True, "schema": {"type": "string"}}

OPENAPI_PATHS: dict[str, Any] = {
    "/stations": {
        "get": {"summary": "List dispatch stations and their public keys", "operationId": "listStations",
                "security": _SECURE, "responses": {"200": _json({"type": "object", "required": ["stations"],
                "properties": {"stations": {"type": "array", "items": _STATION}}}, "The stations"),
                **_errors(401)}},
        "post": {"summary": "Register a station's RSA public key (>= 3072 bits); creates its broker"
                            " account, whose password the answer shows this once",
                 "operationId": "addStation", "security": _SECURE,
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
        "get": {"summary": "One station", "operationId": "showStation", "security": _SECURE,
                "responses": {"200": _json(_STATION, "The station"), **_errors(401, 404)}},
        "delete": {"summary": "Revoke a station: its key and broker account stop working, and its"
                              " broker connection is closed",
                   "operationId": "revokeStation", "security": _SECURE,
                   "responses": {"200": _json(_STATION, "Revoked"), **_errors(401, 404, 503)}},
    },
    "/dispatch/key": {
        "get": {"summary": "The dispatch server's public key", "operationId": "dispatchKey",
                "security": _SECURE, "responses": {"200": _json({"type": "object", "properties": {
                    "id": {"type": "string"}, "public_key": {"type": "string"}}}, "The key"),
                    **_errors(401, 404)}},
    },
}
