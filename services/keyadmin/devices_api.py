"""/api/v1/devices: register, list, show, rotate, revoke and import devices."""
from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, jsonify, request

from services.common.config import DEVICE_ID_RULE, Config, valid_device_id
from services.common.logs import kv
from services.keyadmin import api_common as api
from services.keystore.credentials import CredentialError, make_secret
from services.keystore.models import Device, NewDevice

log = logging.getLogger("medsec.keyadmin")
DEFAULT_GRACE = 24 * 3600.0
MAX_GRACE = 90 * 24 * 3600.0
MAX_IMPORT_ERRORS = 100


def _device_id(device_id: object) -> str:
    if not valid_device_id(device_id):
        raise api.ApiError(400, f"device id must be {DEVICE_ID_RULE}")
    return device_id  # type: ignore[return-value]


def _must_get(device_id: str) -> Device:
    device = api.store().get(_device_id(device_id))
    if device is None:
        raise api.ApiError(404, f"no device {device_id}")
    return device


def _grace(body: dict[str, Any]) -> float:
    grace = body.get("grace", DEFAULT_GRACE)
    if isinstance(grace, bool) or not isinstance(grace, int | float) or not 0 <= grace <= MAX_GRACE:
        raise api.ApiError(400, f"grace must be a number of seconds between 0 and {MAX_GRACE:.0f}")
    return float(grace)


def parse_key_file(text: str) -> tuple[list[NewDevice], list[dict[str, Any]]]:
    """A legacy key file (one JSON object per line) -> devices, and errors by line number (1-based)."""
    devices: list[NewDevice] = []
    errors: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            errors.append({"line": number, "error": "not JSON"})
            continue
        if not isinstance(obj, dict):
            errors.append({"line": number, "error": "not a JSON object"})
            continue
        unknown = sorted(set(obj) - {"id", "key", "iv", "protocol"})
        protocol = obj.get("protocol", "v1")
        if unknown:
            errors.append({"line": number, "error": f"unknown fields: {', '.join(unknown)[:100]}"})
        elif not valid_device_id(obj.get("id")):
            errors.append({"line": number, "error": f"id must be {DEVICE_ID_RULE}"})
        elif protocol != "v1":
            errors.append({"line": number, "error": "legacy key files hold v1 devices only"})
        elif "key" not in obj or "iv" not in obj:
            errors.append({"line": number, "error": "key and iv are required"})
        elif obj["id"] in seen:
            errors.append({"line": number, "error": f"id {obj['id']} repeats line {seen[obj['id']]}"})
        else:
            try:
                devices.append(NewDevice(obj["id"], "v1", make_secret("v1", obj)))
                seen[obj["id"]] = number
            except CredentialError as exc:
                errors.append({"line": number, "error": str(exc)})
    return devices, errors


def create_blueprint(config: Config) -> Blueprint:
    bp = Blueprint("devices", __name__)

    @bp.get("/devices")
    def list_devices() -> Any:
        return jsonify({"devices": [d.to_json() for d in api.store().list()]})

    @bp.post("/devices")
    def add_device() -> Any:
        body = api.json_body({"id", "protocol", "key", "iv"})
        device_id = _device_id(body.get("id"))
        protocol = body.get("protocol", "v1")
        try:
            secret = make_secret(protocol, body)
        except CredentialError as exc:
            raise api.ApiError(400, str(exc)) from None
        device = api.store().add(NewDevice(device_id, protocol, secret), actor=api.actor())
        api.events().publish("added", device_id)
        log.info(kv(event="device_added", device=device_id, protocol=protocol, actor=api.actor()))
        # The only answer that carries the credentials (and rotate's).
        return jsonify({**device.to_json(), **secret}), 201

    @bp.get("/devices/<device_id>")
    def show_device(device_id: str) -> Any:
        return jsonify(_must_get(device_id).to_json())

    @bp.delete("/devices/<device_id>")
    def revoke_device(device_id: str) -> Any:
        _must_get(device_id)
        device = api.store().revoke(device_id, actor=api.actor())
        api.events().publish("revoked", device_id)
        log.info(kv(event="device_revoked", device=device_id, actor=api.actor()))
        return jsonify(device.to_json())

    @bp.post("/devices/<device_id>/rotate")
    def rotate_device(device_id: str) -> Any:
        current = _must_get(device_id)
        body = api.json_body({"grace", "key", "iv"}, optional=True)
        grace = _grace(body)
        try:
            secret = make_secret(current.protocol, {k: v for k, v in body.items() if k != "grace"})
        except CredentialError as exc:
            raise api.ApiError(400, str(exc)) from None
        device = api.store().rotate(device_id, secret, grace, actor=api.actor())
        api.events().publish("rotated", device_id)
        log.info(kv(event="device_rotated", device=device_id, grace=grace, actor=api.actor()))
        return jsonify({**device.to_json(), **secret}), 201

    @bp.post("/devices/import")
    def import_devices() -> Any:
        try:
            text = request.get_data(cache=False).decode("utf-8")
        except UnicodeDecodeError:
            raise api.ApiError(400, "the key file is not UTF-8 text") from None
        devices, errors = parse_key_file(text)
        if errors:
            lines = ", ".join(str(e["line"]) for e in errors[:20])
            raise api.ApiError(400, f"nothing imported: bad line(s) {lines}",
                               lines=errors[:MAX_IMPORT_ERRORS])
        if not devices:
            raise api.ApiError(400, "the key file holds no devices")
        imported = api.store().import_many(devices, actor=api.actor())
        for device in imported:
            api.events().publish("imported", device.id)
        log.info(kv(event="devices_imported", count=len(imported), actor=api.actor()))
        return jsonify({"imported": len(imported), "devices": [d.id for d in imported]}), 201

    return bp
