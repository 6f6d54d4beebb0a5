"""Issue 6, done-when 3: the editor, the admin API and the dashboard refuse requests without credentials.
Issue 15: logins by role: viewer (Fleet, Device, Alerts), operator (also Devices), admin (the editor)."""
from __future__ import annotations

import json

from services.common.state import admin_token, mqtt_password
from tests.support.proc import wait_until

from .support import basic, http, login, needs_nodered

pytestmark = needs_nodered

ADMIN_API = [("GET", "/flows"), ("POST", "/flows"), ("GET", "/nodes"), ("POST", "/nodes"),
             ("GET", "/settings"), ("GET", "/credentials/medsec-gateway/medsec.gateway"),
             ("POST", "/inject/tick.1s"),
             # Dashboard 2.0's admin-side API (editing pages from the dashboard).
             ("PATCH", "/dashboard/api/v1/ui.base/flows"),
             ("PATCH", "/dashboard/api/v1/ui.base/edit/ui.page.fleet")]


def test_admin_api_and_dashboard_need_credentials(nodered):
    base = nodered["base"]
    # The editor asks for a login: credentials, no anonymous user.
    scheme = http("GET", f"{base}/auth/login").json()
    assert scheme["type"] == "credentials"
    assert http("GET", f"{base}/settings").status == 401
    for method, path in ADMIN_API:
        data = b"[]" if method in ("POST", "PATCH") else None
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


PAGES = ["/dashboard", "/dashboard/fleet", "/dashboard/device", "/dashboard/alerts"]
DEVICES_PAGE = ["/dashboard/devices", "/dashboard/devices/", "/dashboard/devices/anything",
                # Dashboard 2.0's debug routes: any widget's stored message, the Devices page's too.
                "/dashboard/_debug/datastore/admin.view", "/dashboard/_debug/statestore/admin.view"]


def test_each_login_gets_its_roles_pages_and_only_admin_the_editor(nodered):
    base, pw = nodered["base"], nodered["passwords"]
    for user in ("viewer", "operator", "admin"):
        for path in PAGES:
            assert http("GET", base + path, basic(user, pw[user])).status == 200, (user, path)
        others = [p for u, p in pw.items() if u != user]
        for path in PAGES + DEVICES_PAGE:
            for wrong in others:  # another login's password is not this login's
                assert http("GET", base + path, basic(user, wrong)).status == 401, (user, path)
    for path in DEVICES_PAGE:
        assert http("GET", base + path, basic("viewer", pw["viewer"])).status == 403, path
        operator = http("GET", base + path, basic("operator", pw["operator"])).status
        assert operator == (403 if "_debug" in path else 200), path
        assert http("GET", base + path, basic("admin", pw["admin"])).status == 200, path
    # The editor, /flows and the admin API: viewer and operator get no token and 403 for their login.
    for user in ("viewer", "operator"):
        assert login(base, user, pw[user]).status in (401, 403), user
        for method, path in ADMIN_API + [("GET", "/"), ("GET", "/red/red.min.js")]:
            data = b"[]" if method in ("POST", "PATCH") else None
            headers = {**basic(user, pw[user]), "Content-Type": "application/json"}
            res = http(method, base + path, headers, data)
            assert res.status in (401, 403), f"{user}: {method} {path} answered {res.status}"
    token = login(base, "admin", pw["admin"])
    assert token.status == 200
    bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
    assert http("GET", f"{base}/flows", bearer).status == 200
    assert http("GET", f"{base}/", basic("admin", pw["admin"])).status == 200
    assert "event=refused reason=page user=viewer" in nodered["log"].read_text()


def socket_session(base: str, headers: dict[str, str], origin: str | None = None):
    """One socket.io session over polling, as the dashboard opens it: what the server answers
    first, a function that sends a packet and one that polls for what comes next."""
    url = f"{base}/dashboard/socket.io/?EIO=4&transport=polling"
    if origin:
        headers = {**headers, "Origin": origin}
    hello = http("GET", url, headers)
    sid = json.loads(hello.body[1:])["sid"]
    post = {**headers, "Content-Type": "text/plain"}
    http("POST", f"{url}&sid={sid}", post, b"40")
    answer = http("GET", f"{url}&sid={sid}", headers).body.decode()
    return (answer, lambda packet: http("POST", f"{url}&sid={sid}", post, packet),
            lambda: http("GET", f"{url}&sid={sid}", headers, timeout=40).body.decode())


def socket_connect(base: str, headers: dict[str, str], origin: str | None = None) -> str:
    return socket_session(base, headers, origin)[0]


def ui_config(answer: str) -> dict:
    """The ui-config event among the packets of a polling answer (packets split by \x1e)."""
    for packet in answer.split("\x1e"):
        if packet.startswith('42["ui-config"'):
            return json.loads(packet[2:])[2]
    raise AssertionError(f"no ui-config in {answer[:300]}")


def test_dashboard_socket_refuses_unauthenticated_clients(nodered):
    """Dashboard 2.0 talks over socket.io, which httpNodeAuth does not cover: our middleware does."""
    base = nodered["base"]
    assert "unauthorized" in socket_connect(base, {})
    assert "unauthorized" in socket_connect(base, basic("admin", "nope"))
    assert "unauthorized" in socket_connect(base, basic("viewer", nodered["passwords"]["operator"]))
    answer = socket_connect(base, basic("admin", nodered["password"]))
    assert answer.startswith("40{") and "ui-config" in answer
    # Another site's page cannot open the socket with the browser's credentials.
    assert "cross-origin" in socket_connect(base, basic("admin", nodered["password"]), origin="http://evil.example")


def test_the_socket_gives_each_role_its_pages_only(nodered):
    base, pw = nodered["base"], nodered["passwords"]
    paths = {}
    for user in ("viewer", "operator", "admin"):
        config = ui_config(socket_connect(base, basic(user, pw[user])))
        paths[user] = sorted(p["path"] for p in config["pages"].values())
        groups = {g["page"] for g in config["groups"].values()}
        assert groups <= set(config["pages"]), user
        if user == "viewer":  # not a widget of the Devices page: not its template, not its data
            assert "admin.view" not in config["widgets"] and "ui.g.admin" not in config["groups"]
    assert paths["viewer"] == ["/alerts", "/device", "/fleet"]
    assert paths["operator"] == paths["admin"] == ["/alerts", "/device", "/devices", "/fleet"]
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


def test_a_viewers_socket_cannot_reach_the_devices_page(nodered):
    """Server-side, not hidden in the page: a viewer's events for the Devices page's widget are
    dropped before the flow; the same events from an operator reach it and the medsec devices
    node, whose answer (here: the id is refused) comes back to that session."""
    base, pw = nodered["base"], nodered["passwords"]

    def action(device: str) -> bytes:
        msg = {"action": "add", "payload": {"id": device, "protocol": "v2"},
               "_client": {"user": {"username": "admin", "role": "admin"}}}  # forged: replaced by the plugin
        return ("42" + json.dumps(["widget-send", "admin.view", msg])).encode()

    log = nodered["log"]
    _, send, _ = socket_session(base, basic("viewer", pw["viewer"]))
    send(action("viewer dev 1"))
    wait_until(lambda: "reason=widget user=viewer role=viewer widget=admin.view" in log.read_text(), 15,
               what="the viewer's event refused")
    _, send, poll = socket_session(base, basic("operator", pw["operator"]))
    send(action("operator dev 1"))  # not a device id: the node refuses it before any request
    seen: list[str] = []
    wait_until(lambda: seen.append(poll()) or "add needs a device id" in "".join(seen), 60,
               what="the medsec devices node's answer to the operator's session")
    assert "msg-input:admin.view" in "".join(seen)
