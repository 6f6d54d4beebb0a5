"""/api/v1/tokens: key-admin API tokens with scopes (admin scope; scopes.py).

    POST   /tokens          {"name", "scope"} -> 201 {..., "token"}: the value, shown this once
    GET    /tokens          {"tokens": [...]}: names, scopes, times; never a value or hash
    DELETE /tokens/<name>   revoke: the next request with it gets 401

The store keeps only the SHA-256 of a value. The operator's token (secrets/admin.token,
an admin token named "operator") is not stored here: `medsec admin-token --rotate` replaces it.
"""
from __future__ import annotations

import logging
import secrets
from typing import Any

from flask import Blueprint, jsonify

from services.common.config import Config, valid_device_id
from services.common.logs import kv
from services.common.state import hash_token
from services.keyadmin import api_common as api
from services.keyadmin.api_common import OPERATOR, ApiError
from services.keystore.models import SCOPES

log = logging.getLogger("medsec.keyadmin")


def _name(name: object) -> str:
    if not valid_device_id(name):
        raise ApiError(400, "name must be 1-64 characters of A-Z a-z 0-9 _ . -")
    if name == OPERATOR:
        raise ApiError(400, f"{OPERATOR!r} is the operator's token; "
                            "rotate it with `medsec admin-token --rotate`")
    return name  # type: ignore[return-value]


def create_blueprint(config: Config) -> Blueprint:
    bp = Blueprint("tokens", __name__)

    @bp.post("/tokens")
    def create_token() -> Any:
        body = api.json_body({"name", "scope"})
        name = _name(body.get("name"))
        scope = body.get("scope")
        if scope not in SCOPES:
            raise ApiError(400, f"scope must be one of {', '.join(SCOPES)}")
        value = secrets.token_urlsafe(32)
        token = api.store().add_token(name, scope, hash_token(value), actor=api.actor())
        log.info(kv(event="token_created", name=name, scope=scope, actor=api.actor()))
        return jsonify({**token.to_json(), "token": value}), 201

    @bp.get("/tokens")
    def list_tokens() -> Any:
        operator = {"name": OPERATOR, "scope": "admin", "created_at": None, "revoked_at": None,
                    "integrity": "ok"}
        return jsonify({"tokens": [operator] + [t.to_json() for t in api.store().tokens()]})

    @bp.delete("/tokens/<name>")
    def revoke_token(name: str) -> Any:
        token = api.store().revoke_token(_name(name), actor=api.actor())
        log.info(kv(event="token_revoked", name=name, actor=api.actor()))
        return jsonify(token.to_json())

    return bp
