"""Station public keys of the dispatch workflow, on the key-admin API (a Flask blueprint).

    POST   /api/v1/stations        {"id", "public_key": PEM (RSA >= 3072 bits)}
                                   -> 201 {"id", "fingerprint", ..., "mqtt_account", "mqtt_password"}
                                   (the broker password is shown this once)
    GET    /api/v1/stations        {"stations": [{"id", "fingerprint", "public_key", "created_at"}]}
    GET    /api/v1/stations/<id>   one station (public keys are public; no secret is ever listed)
    DELETE /api/v1/stations/<id>   revoke: dispatch refuses its envelopes, its broker account goes
    GET    /api/v1/dispatch/key    the dispatch server's public key (what stations seal for)

Stored in the key store (its `dispatch_stations` table, on either backend);
changes go to the audit log. Registered in services/keyadmin/app.py BLUEPRINTS.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Blueprint, jsonify

from services.broker import BrokerError
from services.common import envelope
from services.common.config import Config
from services.common.logs import kv
from services.common.stations import SERVER_ID, account, server_public_path, valid_station_id
from services.keyadmin import api_common as api
from services.keyadmin import station_accounts
from services.keyadmin.api_common import ApiError

log = logging.getLogger("medsec.keyadmin.stations")


def fingerprint(pem: str) -> str:
    der = envelope.load_public_key(pem).export_key(format="DER")
    return "SHA256:" + hashlib.sha256(der).hexdigest()


def _audit(action: str, station: str, detail: dict[str, Any]) -> None:
    api.store().append_audit(api.actor(), action, f"station:{station}", detail)


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
        info = api.store().add_station(station, pem, fingerprint(pem)).to_json()
        _audit("station_added", station, {"fingerprint": info["fingerprint"]})
        log.info(kv(event="station_added", station=station, fingerprint=info["fingerprint"]))
        with _broker_change(station, "registered", "the broker takes the login at its next start "
                            f"(`medsec mqtt-password {account(station)}` prints the password)"):
            password, _ = station_accounts.provision(config, station)
        return jsonify({**info, "mqtt_account": account(station), "mqtt_password": password}), 201

    @bp.get("/stations")
    def list_stations() -> Any:
        return jsonify({"stations": [s.to_json() for s in api.store().stations()]})

    @bp.get("/stations/<station>")
    def get_station(station: str) -> Any:
        return jsonify(api.store().station(station).to_json())

    @bp.delete("/stations/<station>")
    def revoke_station(station: str) -> Any:
        info = api.store().revoke_station(station).to_json()
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
