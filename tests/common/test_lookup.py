"""Lookups the resolver cannot answer for now (EAI_AGAIN) are asked again; others fail at once.

The resolver is the one part replaced here: a stand-in for aardvark-dns that drops the first
lookups of a name, as it does while it rebuilds its servers after a container restart. The HTTP
server, paho's connect and the key-admin client are the real ones.
"""
from __future__ import annotations

import socket
import threading
import time
import urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from services.common import lookup
from services.common.adminclient import AdminApiError, AdminClient

NAME = "keyadmin.invalid"


class FlakyResolver:
    """`NAME` fails `drops` times (EAI_AGAIN unless `errno` says otherwise), then resolves to 127.0.0.1."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, drops: int, errno: int = socket.EAI_AGAIN) -> None:
        self.drops, self.asked = drops, 0
        real = socket.getaddrinfo

        def getaddrinfo(host, *args, **kw):
            if host != NAME:
                return real(host, *args, **kw)
            self.asked += 1
            if self.asked <= self.drops:
                raise socket.gaierror(errno, "the resolver's answer")
            return real("127.0.0.1", *args, **kw)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


class Counting(BaseHTTPRequestHandler):
    posts = 0

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        type(self).posts += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


@pytest.fixture
def api_port():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    Counting.posts = 0
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("exc,temporary", [
    (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), True),
    (OSError(0, "wrapped", None), False),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), False),
    (socket.gaierror(socket.EAI_FAIL, "Non-recoverable failure in name resolution"), False),
    (ConnectionRefusedError(111, "Connection refused"), False),
    (TimeoutError("timed out"), False),
])
def test_only_eai_again_is_temporary_raw_or_wrapped_by_urllib(exc, temporary) -> None:
    assert lookup.is_temporary(exc) is temporary
    assert lookup.is_temporary(urllib.error.URLError(exc)) is temporary


def test_retrying_asks_again_until_the_answer_comes() -> None:
    calls = []

    def action() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return "connected"

    assert lookup.retrying(action, grace=5) == "connected" and len(calls) == 3


@pytest.mark.parametrize("exc", [socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
                                 ConnectionRefusedError(111, "Connection refused")])
def test_retrying_lets_other_failures_through_at_once(exc) -> None:
    calls = []

    def action() -> None:
        calls.append(1)
        raise exc

    with pytest.raises(type(exc)):
        lookup.retrying(action, grace=5)
    assert len(calls) == 1


def test_retrying_gives_up_after_the_grace() -> None:
    def action() -> None:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    started = time.monotonic()
    with pytest.raises(socket.gaierror):
        lookup.retrying(action, grace=0.5)
    assert 0.5 <= time.monotonic() - started < 3


def test_a_post_reaches_the_api_once_across_dropped_lookups(monkeypatch, api_port) -> None:
    resolver = FlakyResolver(monkeypatch, drops=5)
    api = AdminClient(f"http://{NAME}:{api_port}/api/v1", "tok", timeout=5)  # wait=0: no other retry
    assert api.post("/stations", {"id": "s1"}) == {}
    assert resolver.asked == 6 and Counting.posts == 1


def test_a_lookup_that_keeps_failing_ends_in_a_clear_error(monkeypatch, api_port) -> None:
    FlakyResolver(monkeypatch, drops=10**6)
    monkeypatch.setattr(lookup, "GRACE", 0.6)
    with pytest.raises(AdminApiError) as err:
        AdminClient(f"http://{NAME}:{api_port}/api/v1", "tok", timeout=5).post("/stations", {"id": "s1"})
    assert err.value.unreachable and "the resolver's answer" in err.value.message
    assert Counting.posts == 0


def test_a_name_that_does_not_exist_fails_at_once(monkeypatch, api_port) -> None:
    resolver = FlakyResolver(monkeypatch, drops=10**6, errno=socket.EAI_NONAME)
    with pytest.raises(AdminApiError) as err:
        AdminClient(f"http://{NAME}:{api_port}/api/v1", "tok", timeout=5).get("/devices")
    assert err.value.unreachable and resolver.asked == 1


def test_paho_connect_through_dropped_lookups(monkeypatch) -> None:
    """What dispatch stations, the audit witness and the broker admin do: paho raises the lookup's
    own gaierror, so lookup.retrying sees EAI_AGAIN."""
    resolver = FlakyResolver(monkeypatch, drops=3)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="lookup-test")
        lookup.retrying(lambda: client.connect(NAME, listener.getsockname()[1]))
        peer, _ = listener.accept()
        peer.close()
        client.socket().close()
    assert resolver.asked == 4
