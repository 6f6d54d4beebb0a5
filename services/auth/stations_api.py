"""Station public keys of the dispatch workflow, on the key-admin API (a Flask blueprint).

    POST   /api/v1/stations        {"id", "public_key": PEM (RSA >= 3072 bits)}
                                   -> 201 {"id", "fingerprint", "mqtt_account", "mqtt_password"}
                                   (the broker password is shown this once)
    GET    /api/v1/stations        [{"id", "fingerprint", "public_key", "created_at"}]
    GET    /api/v1/stations/<id>   one station (public keys are public; no secret is ever listed)
    DELETE /api/v1/stations/<id>   revoke: key refused by dispatch, broker account removed
    GET    /api/v1/stations/server-key   the dispatch server's public key

Stored in its own table, `dispatch_stations`, in the key store file (auth and
keyadmin are the only processes that open it). Every route needs the admin token.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Blueprint, Flask, g, jsonify, request

from services.common import envelope
from services.common.config import Config
from services.common.logs import kv
from services.common.state import read_secret
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


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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
        db = sqlite3.connect(self.path, timeout=10)
        db.row_factory = sqlite3.Row
        try:
            with db:  # commits, or rolls back on error
                yield db
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


def create_blueprint(config: Config) -> Blueprint:
    bp = Blueprint("stations", __name__)
    store = StationStore(config.keystore_path)

    @bp.before_request
    def _authorise() -> None:
        # Checked here too, so the routes are safe whatever the host app does.
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        expected = read_secret(config.admin_token_hash_path).decode().strip()
        if not token or not hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), expected):
            raise ApiError(401, "missing or wrong admin token")
        g.stations_actor = "admin"

    @bp.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Any:
        return jsonify({"error": exc.message}), exc.status

    @bp.post("/stations")
    def add_station() -> Any:
        doc = request.get_json(silent=True)
        if not isinstance(doc, dict):
            raise ApiError(400, 'body must be JSON: {"id": ..., "public_key": PEM}')
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
        password, _ = station_accounts.provision(config, station)
        log.info(kv(event="station_added", station=station, fingerprint=info["fingerprint"]))
        body = {**info, "mqtt_account": account(station), "mqtt_password": password}
        return jsonify(body), 201

    @bp.get("/stations")
    def list_stations() -> Any:
        return jsonify(store.list())

    @bp.get("/stations/server-key")
    def server_key() -> Any:
        path = server_public_path(config)
        if not path.exists():
            raise ApiError(404, "the dispatch service has not generated its key yet")
        return jsonify({"id": SERVER_ID, "public_key": path.read_text()})

    @bp.get("/stations/<station>")
    def get_station(station: str) -> Any:
        return jsonify(store.get(station))

    @bp.delete("/stations/<station>")
    def revoke_station(station: str) -> Any:
        info = store.revoke(station)
        station_accounts.deprovision(config, station)
        log.info(kv(event="station_revoked", station=station))
        return jsonify(info)

    return bp


def create_app(config: Config | None = None) -> Flask:
    """A key-admin app with only the stations routes (tests; stacks without services.auth.keyadmin)."""
    config = config or Config.from_env()
    app = Flask("medsec-stations")
    app.register_blueprint(create_blueprint(config), url_prefix="/api/v1")
    return app


def main() -> None:
    from waitress import serve

    from services.common.logs import setup

    setup("keyadmin")
    config = Config.from_env()
    serve(create_app(config), host=config.host, port=config.admin_port, threads=4)


if __name__ == "__main__":
    main()
