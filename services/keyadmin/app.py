"""The key-admin API: a Flask app on the key store (`python -m services.keyadmin` serves it).

`create_app(config, overrides)` builds the very app production runs; tests
pass overrides (TESTING, STORE, EVENTS). Errors become `{"error": ...}`
answers in one place; every request's token and scope are checked in one
place too (api_common.authorise, before any blueprint). More endpoints: add a
blueprint factory to BLUEPRINTS, its paths to openapi.PATHS and their scopes to
scopes.ROUTES (a route missing there is refused).
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from services.common.config import Config, service_config
from services.common.logs import kv, setup
from services.common.state import SERVICE_TOKENS, StateError, read_secret, service_token_hash_path
from services.keyadmin import clashes, devices_api, history_api, openapi, ops_api, stations_api, tokens_api
from services.keyadmin.api_common import ApiError, actor, authorise
from services.keyadmin.audit_witness import WitnessKeeper
from services.keyadmin.events import BusKeyEvents
from services.keystore.backends import open_store
from services.keystore.credentials import CredentialError
from services.keystore.integrity import IntegrityFailed
from services.keystore.models import (
    CredentialsInUse,
    DeviceExists,
    DeviceNotFound,
    DeviceRevoked,
    KeyStoreError,
    StationExists,
    StationNotFound,
    TokenExists,
    TokenNotFound,
)
from services.keystore.store import KeyStore

log = logging.getLogger("medsec.keyadmin")
MAX_BODY = 8 << 20
# Scraped or polled often: logged only when they fail.
QUIET_RULES = frozenset({"/api/v1/healthz", "/api/v1/metrics"})

# The registration point: each factory takes the Config and returns a blueprint mounted at /api/v1
# (its routes are documented in openapi.PATHS).
BLUEPRINTS: list[Callable[[Config], Blueprint]] = [
    devices_api.create_blueprint,
    ops_api.create_blueprint,
    stations_api.create_blueprint,
    tokens_api.create_blueprint,
    history_api.create_blueprint,
]

_STORE_ERRORS: dict[type[KeyStoreError], int] = {
    DeviceNotFound: 404,
    DeviceExists: 409,
    DeviceRevoked: 409,
    CredentialsInUse: 409,
    StationNotFound: 404,
    StationExists: 409,
    TokenNotFound: 404,
    TokenExists: 409,
    IntegrityFailed: 409,
}


def _error(status: int, message: str, **extra: Any) -> Any:
    return jsonify({"error": message, **extra}), status


def _handle(exc: Exception) -> Any:
    """The one place errors become answers; never a traceback or a secret in the body."""
    if isinstance(exc, ApiError):
        return _error(exc.status, exc.message, **exc.extra)
    if isinstance(exc, KeyStoreError):
        return _error(_STORE_ERRORS.get(type(exc), 409), str(exc))
    if isinstance(exc, CredentialError):
        return _error(400, str(exc))
    if isinstance(exc, HTTPException):
        body, status = _error(exc.code or 500, exc.description or exc.name)
        # Keep the headers HTTP requires with some errors (Allow on 405, WWW-Authenticate on 401).
        for name, value in exc.get_headers():
            if name.lower() in ("allow", "www-authenticate", "retry-after"):
                body.headers[name] = value
        return body, status
    log.exception(kv(event="internal_error", path=request.path, error=type(exc).__name__))
    return _error(500, "internal error; see the keyadmin log")


def register_service_tokens(config: Config, store: KeyStore) -> None:
    """The tokens generated at first start (state.SERVICE_TOKENS), registered by their SHA-256
    files: keyadmin never needs their values. A revoked one stays revoked until its file changes."""
    for name, scope in SERVICE_TOKENS.items():
        path = service_token_hash_path(config, name)
        if not path.exists():
            continue
        try:
            digest = read_secret(path).decode().strip()
        except StateError as exc:
            log.warning(kv(event="service_token_skipped", name=name, error=str(exc)))
            continue
        if store.ensure_token(name, scope, digest, actor="keyadmin"):
            log.info(kv(event="service_token_registered", name=name, scope=scope))


def create_app(config: Config | None = None, overrides: dict[str, Any] | None = None) -> Flask:
    config = config or Config.from_env()
    overrides = dict(overrides or {})
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY, JSON_SORT_KEYS=False)
    store = overrides.pop("STORE", None) or open_store(config)
    events = overrides.pop("EVENTS", None) or BusKeyEvents(config)
    app.config.update(overrides)
    app.extensions["medsec.config"] = config
    app.extensions["medsec.store"] = store
    app.extensions["medsec.events"] = events
    app.extensions["medsec.request_counts"] = {}
    app.extensions["medsec.openapi"] = openapi.spec()
    clashes.report(store, log)  # a store from before the clash check: say so at start
    counts_lock = threading.Lock()
    register_service_tokens(config, store)
    # Every route's scope is checked here, before any blueprint sees the request (scopes.py).
    app.before_request(authorise)

    for factory in BLUEPRINTS:
        app.register_blueprint(factory(config), url_prefix="/api/v1")
    app.register_error_handler(Exception, _handle)

    @app.after_request
    def _count(response: Any) -> Any:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        key = (rule, request.method, response.status_code)
        with counts_lock:
            counts = current_app.extensions["medsec.request_counts"]
            counts[key] = counts.get(key, 0) + 1
        # One line per request, naming the token (its name, never its value) that made it; the
        # path holds at most a device id; bodies are never logged.
        level = logging.WARNING if response.status_code in (401, 403) else logging.INFO
        if rule not in QUIET_RULES or response.status_code >= 400:
            log.log(level, kv(event="request", method=request.method, path=request.path[:200],
                              status=response.status_code, actor=actor(), client=request.remote_addr or "-"))
        return response

    return app


def main() -> int:
    setup("keyadmin")
    config = service_config("keyadmin")
    try:
        app = create_app(config)
    except (StateError, ValueError, KeyStoreError) as exc:
        log.error(kv(event="start_failed", error=str(exc)))
        return 1
    from waitress import serve

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    witness = WitnessKeeper(config, app.extensions["medsec.store"])
    witness.start()
    log.info(kv(event="listening", url=config.admin_url))
    try:
        serve(app, host=config.host, port=config.admin_port, threads=8, ident="medsec")
    finally:
        witness.close()
        app.extensions["medsec.events"].close()
        app.extensions["medsec.store"].close()
    return 0
