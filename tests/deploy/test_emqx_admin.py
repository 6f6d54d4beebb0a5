"""Station logins on EMQX (compose): the REST calls keyadmin makes, against a stand-in.

No EMQX runs on this machine (no Docker engine, no package), so a small HTTP server
plays the three documented endpoints (built-in database users, client list, client
kick) with EMQX's Basic API-key auth and status codes. It checks our side of the
contract; a live EMQX is what compose runs.
"""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from services.broker import BrokerError, emqx_admin
from services.common.config import Config
from services.common.state import init_state, load_passwords, write_secret
from services.keyadmin import station_accounts
from tests.support.proc import free_port

API_KEY = "medsec-keyadmin:k3y-secret-0123456789abcdefghij"


class StandInEmqx(BaseHTTPRequestHandler):
    users: dict[str, str] = {}
    clients: dict[str, str] = {}  # clientid -> username

    def log_message(self, *args) -> None:
        pass

    def _answer(self, status: int, doc: dict | None = None) -> None:
        body = json.dumps(doc).encode() if doc is not None else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self, method: str) -> None:
        expected = "Basic " + base64.b64encode(API_KEY.encode()).decode()
        if self.headers.get("Authorization") != expected:
            return self._answer(401, {"code": "BAD_API_KEY_OR_SECRET", "message": "Check api_key/api_secret"})
        url = urlsplit(self.path)
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
        users = emqx_admin.USERS
        if method == "POST" and url.path == users:
            if body["user_id"] in self.users:
                return self._answer(409, {"code": "ALREADY_EXISTS", "message": "User already exists"})
            self.users[body["user_id"]] = body["password"]
            return self._answer(201, {"user_id": body["user_id"], "is_superuser": False})
        if url.path.startswith(users + "/"):
            user = unquote(url.path[len(users) + 1:])
            if user not in self.users:
                return self._answer(404, {"code": "NOT_FOUND", "message": "User not found"})
            if method == "PUT":
                self.users[user] = body["password"]
                return self._answer(200, {"user_id": user, "is_superuser": False})
            if method == "DELETE":
                del self.users[user]
                return self._answer(204)
        if method == "GET" and url.path == emqx_admin.CLIENTS:
            name = parse_qs(url.query).get("username", [None])[0]
            return self._answer(200, {"data": [{"clientid": c, "username": u}
                                               for c, u in self.clients.items() if u == name], "meta": {}})
        if method == "DELETE" and url.path.startswith(emqx_admin.CLIENTS + "/"):
            clientid = unquote(url.path[len(emqx_admin.CLIENTS) + 1:])
            return self._answer(204 if self.clients.pop(clientid, None) else 404)
        return self._answer(404, {"code": "NOT_FOUND", "message": "no such route"})

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")


@pytest.fixture
def emqx_api(tmp_path):
    StandInEmqx.users, StandInEmqx.clients = {}, {}
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), StandInEmqx)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = Config(home=tmp_path / "home", mqtt_port=free_port(),
                    emqx_api_url=f"http://127.0.0.1:{server.server_port}")
    init_state(config)
    write_secret(emqx_admin.api_key_path(config), API_KEY.encode() + b"\n")
    yield config
    server.shutdown()
    server.server_close()


def test_registering_a_station_creates_its_emqx_login_and_revoking_kicks_it(emqx_api):
    password, created = station_accounts.provision(emqx_api, "s1")
    assert created and StandInEmqx.users == {"station-s1": password}
    assert not (emqx_api.broker_dir / "dynamic-security.json").exists(), "EMQX mode writes no Mosquitto file"
    StandInEmqx.clients = {"line-1/s1": "station-s1", "other": "station-s2"}
    assert station_accounts.deprovision(emqx_api, "s1")
    assert StandInEmqx.users == {} and StandInEmqx.clients == {"other": "station-s2"}
    assert "station-s1" not in load_passwords(emqx_api)


def test_a_login_emqx_has_already_gets_the_new_password(emqx_api):
    StandInEmqx.users["station-s2"] = "an-old-password-0123456789"
    password, _ = station_accounts.provision(emqx_api, "s2")
    assert StandInEmqx.users["station-s2"] == password


def test_a_wrong_api_key_is_a_clear_error_that_names_no_secret(emqx_api):
    write_secret(emqx_admin.api_key_path(emqx_api), b"medsec-keyadmin:wrong-secret-0123456789")
    with pytest.raises(BrokerError) as err:
        station_accounts.provision(emqx_api, "s3")
    message = str(err.value)
    assert message == "EMQX refused to create the login station-s3 (HTTP 401: Check api_key/api_secret)"
    assert "wrong-secret" not in message and load_passwords(emqx_api)["station-s3"] not in message


def test_missing_key_or_unreachable_api_are_clear_errors(emqx_api, tmp_path):
    emqx_admin.api_key_path(emqx_api).unlink()
    with pytest.raises(BrokerError, match="no EMQX API key at .*emqx_api_key secret"):
        emqx_admin.add_login(emqx_api, "station-s4", "pw-0123456789")
    down = Config(home=emqx_api.home, emqx_api_url=f"http://127.0.0.1:{free_port()}")
    write_secret(emqx_admin.api_key_path(down), API_KEY.encode())
    with pytest.raises(BrokerError, match="cannot reach EMQX's API at http://127.0.0.1"):
        emqx_admin.remove_login(down, "station-s4")
