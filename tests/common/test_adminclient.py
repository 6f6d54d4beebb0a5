"""The key-admin HTTP client: JSON in and out, the token as a bearer, errors with status and message.

Against a small real HTTP server (the live key-admin API is exercised by tests/cli, tests/sim and
tests/dispatch through the same client).
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.common.adminclient import AdminApiError, AdminClient, quote
from tests.support.proc import free_port

TOKEN = "tok-0123456789"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def _answer(self, status: int, body: object, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._answer(401, {"error": "missing or wrong admin token"})
        if self.path == "/api/v1/devices":
            return self._answer(200, {"devices": []})
        if self.path == "/api/v1/html":
            return self._answer(502, None, raw=b"<html>bad gateway</html>")
        return self._answer(404, {"error": f"no device {self.path.rsplit('/', 1)[-1]}"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        return self._answer(201 if "id" in body else 400, {"echo": body, "type": self.headers["Content-Type"]}
                            if "id" in body else {"error": "id is required", "lines": [{"line": 1}]})


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/api/v1"
    httpd.shutdown()
    httpd.server_close()


def test_json_in_and_out(server) -> None:
    api = AdminClient(server, TOKEN)
    assert api.get("/devices") == {"devices": []}
    assert api.post("/devices", {"id": "a"}) == {"echo": {"id": "a"}, "type": "application/json"}
    assert api.request("GET", "/devices") == (200, {"devices": []})


@pytest.mark.parametrize("path,status,message", [
    ("/devices/x", 404, "no device x"), ("/html", 502, "HTTP 502 without an error message"),
])
def test_errors_carry_the_status_and_the_apis_message(server, path, status, message) -> None:
    with pytest.raises(AdminApiError) as err:
        AdminClient(server, TOKEN).get(path)
    assert (err.value.status, err.value.message) == (status, message)
    assert not err.value.unreachable and TOKEN not in str(err.value)


def test_the_body_of_a_refusal_stays_available(server) -> None:
    with pytest.raises(AdminApiError) as err:
        AdminClient(server, TOKEN).post("/devices", {"nope": 1})
    assert err.value.status == 400 and err.value.body["lines"] == [{"line": 1}]


def test_a_wrong_token_is_401_and_another_token_can_be_given(server) -> None:
    assert AdminClient(server, "wrong").request("GET", "/devices")[0] == 401
    assert AdminClient(server, "wrong").request("GET", "/devices", token=TOKEN)[0] == 200


def test_unreachable_is_status_0_with_a_hint_and_no_token() -> None:
    api = AdminClient(f"http://127.0.0.1:{free_port()}/api/v1", TOKEN, timeout=2, wait=0.5)
    with pytest.raises(AdminApiError) as err:
        api.get("/devices")
    assert err.value.unreachable and "not reachable" in err.value.message and "medsec up" in err.value.message
    assert TOKEN not in err.value.message


@pytest.mark.parametrize("segment,quoted", [("a/b", "a%2Fb"), ("..", ".."), ("x y", "x%20y"), ("s-1", "s-1")])
def test_ids_are_one_path_segment(segment, quoted) -> None:
    assert quote(segment) == quoted
