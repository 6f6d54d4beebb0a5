"""Token scopes on the key-admin API: every route of the app against every scope, from the one route
table (scopes.ROUTES) and the OpenAPI document, never a hand-written list of routes."""
from __future__ import annotations

import json
import logging
import re

import pytest

from services.common.state import SERVICE_TOKENS, admin_token, hash_token, service_token
from services.keyadmin import scopes
from services.keyadmin.app import create_app
from services.keyadmin.events import NoKeyEvents
from services.keystore.models import SCOPES

PARAMS = {"device_id": "pico-1", "station_id": "s1", "name": "victim"}


@pytest.fixture
def app(state, store):
    return create_app(state, {"TESTING": True, "STORE": store, "EVENTS": NoKeyEvents()})


@pytest.fixture
def tokens(app, store):
    """One token per scope, made through the store as the API would (the value is ours)."""
    values = {scope: f"value-of-{scope}-token" for scope in SCOPES}
    for scope, value in values.items():
        store.add_token(f"holder-{scope.replace(':', '-')}", scope, hash_token(value), actor="test")
    store.add_token("victim", "read", hash_token("victim-value"), actor="test")
    return values


def routes(app) -> list[tuple[str, str, str]]:
    """(method, concrete path, OpenAPI path) of every documented operation of the running app."""
    spec = app.test_client().get("/api/v1/openapi.json").json
    out = []
    for path, item in spec["paths"].items():
        concrete = re.sub(r"{([^}]+)}", lambda m: PARAMS[m.group(1)], path)
        out += [(method.upper(), concrete, path) for method in item if method != "parameters"]
    return out


def call(app, token: str | None, method: str, path: str):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {} if method in ("POST",) and not path.endswith("/import") else None
    return app.test_client().open(f"/api/v1{path}", method=method, headers=headers, json=body)


def test_every_route_of_the_app_has_a_scope_and_the_document_states_it(app):
    spec = app.test_client().get("/api/v1/openapi.json").json
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                assert scopes.needed(method, rule.rule[len("/api/v1"):]) is not None, (method, rule.rule)
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            scope = op["x-scope"]
            assert scope == scopes.ROUTES[(method.upper(), path)], (method, path)
            if scope == scopes.PUBLIC:
                assert op["security"] == [], (method, path)
            else:
                assert op["security"] == [{"bearerAuth": []}] and "403" in op["responses"], (method, path)
                assert f"`{scope}`" in op["description"]
    assert "stations:read" in spec["components"]["securitySchemes"]["bearerAuth"]["description"]


def test_each_scope_gets_exactly_its_routes(app, tokens):
    """For every (route, scope): 403 with the documented message below the route's scope, never
    401 or 403 at or above it. Write routes are checked before anything exists, so a refused
    write that went through anyway would show as a later 409 or a changed store."""
    for method, path, doc_path in routes(app):
        need = scopes.ROUTES[(method, doc_path)]
        for held, value in tokens.items():
            answer = call(app, value, method, path)
            if need == scopes.PUBLIC or scopes.RANK[held] >= scopes.RANK[need]:
                assert answer.status_code not in (401, 403), (held, method, path, answer.json)
            else:
                assert answer.status_code == 403, (held, method, path)
                expected = f"this token's scope is {held}; {method} {doc_path} needs {need}"
                assert answer.json == {"error": expected}


def test_read_tokens_cannot_write_anything(app, tokens, store, state):
    """The read scope (the dashboard's) against every write route of the document: 403, and
    nothing changed in the store."""
    before = (store.list(), store.tokens(), store.stations(), store.audit())
    writes = [(m, p, d) for m, p, d in routes(app) if m not in ("GET", "HEAD")]
    assert {m for m, _, _ in writes} == {"POST", "DELETE"} and len(writes) >= 7
    for value in (tokens["read"], tokens["stations:read"], service_token(state, "nodered-read"),
                  service_token(state, "dispatch")):
        for method, path, _ in writes:
            assert call(app, value, method, path).status_code == 403, (method, path)
    assert (store.list(), store.tokens(), store.stations(), store.audit()) == before


def test_missing_unknown_revoked_and_tampered_tokens_get_401(app, tokens, store, state):
    client = app.test_client()
    assert client.get("/api/v1/devices").status_code == 401
    assert call(app, "no-such-token", "GET", "/devices").status_code == 401
    assert call(app, tokens["read"], "GET", "/devices").status_code == 200
    store.revoke_token("holder-read", actor="test")
    answer = call(app, tokens["read"], "GET", "/devices")
    assert answer.status_code == 401 and answer.json == {"error": "unknown or revoked token"}
    # The operator's token (secrets/admin.token) is an admin token named "operator".
    assert call(app, admin_token(state), "GET", "/tokens").status_code == 200


def test_generated_service_tokens_hold_their_scopes(app, state):
    listed = {t["name"]: t["scope"] for t in call(app, admin_token(state), "GET", "/tokens").json["tokens"]}
    assert {name: listed[name] for name in SERVICE_TOKENS} == SERVICE_TOKENS
    assert listed["operator"] == "admin"
    assert call(app, service_token(state, "nodered-read"), "GET", "/devices").status_code == 200
    manage = service_token(state, "nodered-manage")
    assert call(app, manage, "POST", "/devices").status_code == 400  # allowed; the body is empty
    assert call(app, manage, "GET", "/tokens").status_code == 403
    dispatch = service_token(state, "dispatch")
    assert call(app, dispatch, "GET", "/stations").status_code == 200
    assert call(app, dispatch, "GET", "/devices").status_code == 403


def test_tokens_api_and_audit_name_the_holder_never_the_value(app, state, caplog):
    caplog.set_level(logging.INFO)
    operator = admin_token(state)
    created = app.test_client().post("/api/v1/tokens", json={"name": "ops-1", "scope": "manage"},
                                     headers={"Authorization": f"Bearer {operator}"})
    assert created.status_code == 201 and created.json["scope"] == "manage"
    value = created.json["token"]
    assert call(app, value, "POST", "/devices").status_code == 400
    added = app.test_client().post("/api/v1/devices", json={"id": "pico-9"},
                                   headers={"Authorization": f"Bearer {value}"})
    assert added.status_code == 201
    assert call(app, value, "GET", "/audit").status_code == 403
    listing = call(app, operator, "GET", "/tokens")
    text = listing.get_data(as_text=True)
    assert value not in text and hash_token(value) not in text
    audit = call(app, operator, "GET", "/audit").json["entries"]
    mine = [e for e in audit if e["device"] == "pico-9" or e["detail"].get("name") == "ops-1"]
    assert [(e["actor"], e["action"]) for e in mine] == [("operator", "token_created"), ("ops-1", "added")]
    assert call(app, operator, "DELETE", "/tokens/ops-1").status_code == 200
    assert call(app, value, "GET", "/devices").status_code == 401
    assert call(app, operator, "DELETE", "/tokens/ops-1").status_code == 404
    assert call(app, operator, "DELETE", "/tokens/operator").status_code == 400
    entries = call(app, operator, "GET", "/audit").json["entries"]
    revoked = [e for e in entries if e["action"] == "token_revoked"]
    assert revoked[-1]["actor"] == "operator" and revoked[-1]["detail"] == {"name": "ops-1"}
    everything = json.dumps(call(app, operator, "GET", "/audit").json) + caplog.text
    assert value not in everything and operator not in everything
    assert "actor=ops-1" in caplog.text and "actor=operator" in caplog.text


@pytest.mark.parametrize("body, message", [
    ({"name": "x", "scope": "root"}, "scope must be one of"),
    ({"name": "bad name", "scope": "read"}, "name must be"),
    ({"name": "operator", "scope": "read"}, "operator's token"),
    ({"name": "x"}, "scope must be one of"),
    ({"name": "x", "scope": "read", "extra": 1}, "unknown fields"),
])
def test_token_creation_rejects_bad_input(app, state, body, message):
    answer = app.test_client().post("/api/v1/tokens", json=body,
                                    headers={"Authorization": f"Bearer {admin_token(state)}"})
    assert answer.status_code == 400 and message in answer.json["error"]


def test_an_active_name_cannot_be_reused_a_revoked_one_can(app, state):
    operator = {"Authorization": f"Bearer {admin_token(state)}"}
    client = app.test_client()
    body = {"name": "n", "scope": "read"}
    assert client.post("/api/v1/tokens", json=body, headers=operator).status_code == 201
    assert client.post("/api/v1/tokens", json=body, headers=operator).status_code == 409
    assert client.delete("/api/v1/tokens/n", headers=operator).status_code == 200
    again = client.post("/api/v1/tokens", json={"name": "n", "scope": "admin"}, headers=operator)
    assert again.status_code == 201 and again.json["scope"] == "admin"


def test_a_token_row_edited_in_the_database_gets_401(app, state, store):
    value = app.test_client().post("/api/v1/tokens", json={"name": "t", "scope": "read"}, headers={
        "Authorization": f"Bearer {admin_token(state)}"}).json["token"]
    assert call(app, value, "GET", "/tokens").status_code == 403
    store._x("UPDATE tokens SET scope = 'admin' WHERE name = 't'")  # behind the API's back
    assert call(app, value, "GET", "/tokens").status_code == 401
    listed = {t["name"]: t for t in call(app, admin_token(state), "GET", "/tokens").json["tokens"]}
    assert listed["t"]["integrity"] == "failed"
