"""The OpenAPI document names exactly the app's routes, and schemathesis finds no fault in the live API."""
from __future__ import annotations

import re
import subprocess

import pytest

from services.common.state import admin_token
from services.keyadmin.app import create_app
from services.keyadmin.events import NoKeyEvents
from tests.support.proc import VENV_BIN

# What "no fault" means (issue 3): no 5xx, every status and body as documented, no access without the token.
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
          "response_headers_conformance,ignored_auth,unsupported_method")


def test_spec_names_every_route_and_only_those(state, store):
    app = create_app(state, {"TESTING": True, "STORE": store, "EVENTS": NoKeyEvents()})
    spec = app.test_client().get("/api/v1/openapi.json").json
    assert spec["openapi"].startswith("3.0")
    routes = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        # Compare shapes: a parameter's name is the blueprint's own business.
        path = re.sub(r"<[^>]+>", "{}", rule.rule[len("/api/v1"):])
        routes |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(re.sub(r"{[^}]+}", "{}", path), method) for path, item in spec["paths"].items()
                  for method in item if method in ("get", "post", "put", "patch", "delete")}
    assert routes == documented
    for path, item in spec["paths"].items():
        for name in re.findall(r"{([^}]+)}", path):
            params = item.get("parameters", []) + [p for op in item.values() if isinstance(op, dict)
                                                   for p in op.get("parameters", [])]
            assert any(p["name"] == name and p["in"] == "path" for p in params), (path, name)


@pytest.mark.timeout(120)
def test_schemathesis_finds_no_fault(state, keyadmin):
    result = subprocess.run(
        [str(VENV_BIN / "schemathesis"), "run", f"{state.admin_url}/openapi.json",
         "-H", f"Authorization: Bearer {admin_token(state)}", "--checks", CHECKS,
         "--max-examples", "10", "--seed", "1", "--no-color"],
        capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "passed" in result.stdout
