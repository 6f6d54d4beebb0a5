"""Helpers for the Node-RED tests: skip when the runtime is not installed, log in, HTTP calls."""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

import pytest

from services.nodered import available

needs_nodered = pytest.mark.skipif(not available(), reason="Node-RED not installed (make -C nodered install)")


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self):
        return json.loads(self.body)


def http(method: str, url: str, headers: dict[str, str] | None = None, data: bytes | None = None,
         timeout: float = 10) -> Response:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            return Response(res.status, res.read(), dict(res.headers))
    except urllib.error.HTTPError as err:
        return Response(err.code, err.read(), dict(err.headers))


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def login(base: str, user: str, password: str) -> Response:
    """Node-RED's editor login: the password grant of its OAuth token endpoint."""
    form = urllib.parse.urlencode({"client_id": "node-red-admin", "grant_type": "password", "scope": "*",
                                   "username": user, "password": password}).encode()
    return http("POST", f"{base}/auth/token", {"Content-Type": "application/x-www-form-urlencoded"}, form)
