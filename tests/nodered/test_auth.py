"""Issue 6, done-when 3: the editor, the admin API and the dashboard refuse requests without credentials."""
from __future__ import annotations

import json

from services.common.state import admin_token, mqtt_password
from tests.support.proc import wait_until

from .support import basic, http, login, needs_nodered

pytestmark = needs_nodered

ADMIN_API = [("GET", "/flows"), ("POST", "/flows"), ("GET", "/nodes"), ("POST", "/nodes"),
             ("GET", "/settings"), ("GET", "/credentials/medsec-gateway/medsec.gateway"),
             ("POST", "/inject/tick.1s"),
             ("GET", "/dashboard/api/v1/ui.base/flows")]


def test_admin_api_and_dashboard_need_credentials(nodered):
    base = nodered["base"]
    # The editor asks for a login: credentials, no anonymous user.
    scheme = http("GET", f"{base}/auth/login").json()
    assert scheme["type"] == "credentials"
    assert http("GET", f"{base}/settings").status == 401
    for method, path in ADMIN_API:
        data = b"[]" if method == "POST" else None
        res = http(method, base + path, {"Content-Type": "application/json"}, data)
        assert res.status == 401, f"{method} {path} answered {res.status} without credentials"
        forged = {"Authorization": "Bearer not-a-token", "Content-Type": "application/json"}
        res = http(method, base + path, forged, data)
        assert res.status == 401, f"{method} {path} answered {res.status} to a forged token"
    # A wrong password gets no token.
    assert login(base, "admin", "wrong").status in (401, 403)
    assert login(base, "root", nodered["password"]).status in (401, 403)
    # The dashboard (patients' vitals, device administration) is behind the same login.
    for path in ("/dashboard", "/dashboard/fleet", "/dashboard/devices"):
        assert http("GET", base + path).status == 401, path
        assert http("GET", base + path, basic("admin", "wrong")).status == 401, path
    assert http("GET", f"{base}/dashboard/fleet", basic("admin", nodered["password"])).status == 200


def test_dashboard_socket_refuses_unauthenticated_clients(nodered):
    """Dashboard 2.0 talks over socket.io, which httpNodeAuth does not cover: our middleware does."""
    url = f"{nodered['base']}/dashboard/socket.io/?EIO=4&transport=polling"

    def connect(headers):
        hello = http("GET", url, headers)
        sid = json.loads(hello.body[1:])["sid"]
        http("POST", f"{url}&sid={sid}", {**headers, "Content-Type": "text/plain"}, b"40")
        return http("GET", f"{url}&sid={sid}", headers).body.decode()

    assert "unauthorized" in connect({})
    assert "unauthorized" in connect(basic("admin", "nope"))
    answer = connect(basic("admin", nodered["password"]))
    assert answer.startswith("40{") and "ui-config" in answer


def test_logged_in_admin_sees_flows_without_secrets(nodered):
    config = nodered["config"]
    base = nodered["base"]
    res = login(base, "admin", nodered["password"])
    assert res.status == 200
    auth = {"Authorization": f"Bearer {res.json()['access_token']}"}
    flows = http("GET", f"{base}/flows", auth)
    assert flows.status == 200
    text = flows.body.decode()
    assert "medsec-gateway" in text
    for secret in (mqtt_password(config, "dashboard"), admin_token(config), nodered["password"]):
        assert secret not in text
    creds = http("GET", f"{base}/credentials/medsec-gateway/medsec.gateway", auth).json()
    assert creds.get("has_password") is True and creds.get("has_token") is True
    assert admin_token(config) not in json.dumps(creds)


def test_flow_gateway_logs_into_the_broker_as_dashboard(nodered):
    """The ${MEDSEC_NR_...} references resolved: the shipped flow is connected with the read-only account."""
    wait_until(lambda: "u'dashboard'" in nodered["broker_log"].read_text(), 15,
               what="Node-RED's broker login")
    log = nodered["log"].read_text()
    assert "Not authorized" not in log
    assert "Started flows" in log
