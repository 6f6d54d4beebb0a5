"""The one client of the key-admin HTTP API (stdlib only): CLI, simulator, dispatch, tests, benchmarks.

JSON in and out with the admin token as a bearer token. Two outcomes besides
success: the API answered with an error (`AdminApiError`: status and the
API's own `{"error": ...}` message), or it could not be reached (`status` 0).
The token never appears in a message.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from services.common import lookup
from services.common.config import Config
from services.common.state import StateError, admin_token

TIMEOUT = 30.0


class AdminApiError(Exception):
    """status: the HTTP status, 0 when the API was not reachable; message: the API's error text;
    body: the decoded answer (for fields beside "error", e.g. the lines of a refused import)."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(f"{message} (HTTP {status})" if status else message)
        self.status = status
        self.message = message
        self.body = body

    @property
    def unreachable(self) -> bool:
        return self.status == 0


def quote(segment: str) -> str:
    """One path segment (a device or station id) as it goes into a URL."""
    return urllib.parse.quote(segment, safe="")


class AdminClient:
    """`base_url` is .../api/v1; `wait` > 0 retries an unreachable API that long (a stack starting).
    A lookup of its host that fails only for now is asked again for at least `lookup.GRACE` s."""

    def __init__(self, base_url: str, token: str, timeout: float = TIMEOUT, wait: float = 0.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.wait = wait

    @classmethod
    def from_config(cls, config: Config, timeout: float = TIMEOUT, wait: float = 0.0) -> AdminClient:
        """The operator's client: the stack's URL and the token from its state dir."""
        try:
            token = admin_token(config)
        except StateError as exc:
            raise AdminApiError(0, f"no admin token: {exc}") from None
        return cls(config.admin_url, token, timeout, wait)

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                content_type: str = "application/json", token: str | None = None) -> tuple[int, Any]:
        """(status, decoded JSON) for any answer of the API, errors included. Raises AdminApiError
        (status 0) only when the API cannot be reached within `wait`."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self._token if token is None else token}")
        if data is not None:
            req.add_header("Content-Type", content_type)
        deadline = time.monotonic() + self.wait
        lookup_deadline = time.monotonic() + max(self.wait, lookup.GRACE)
        while True:
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return resp.status, _json(resp.read())
            except urllib.error.HTTPError as exc:
                return exc.code, _json(exc.read())
            except (urllib.error.URLError, OSError) as exc:
                if time.monotonic() >= (lookup_deadline if lookup.is_temporary(exc) else deadline):
                    reason = getattr(exc, "reason", None) or exc
                    raise AdminApiError(0, f"the key-admin API at {self.base_url} is not reachable "
                                           f"({reason}); is the stack running (`medsec up`)?") from None
                time.sleep(lookup.INTERVAL)

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        """The decoded answer of a 2xx; AdminApiError carrying the status and message otherwise."""
        status, answer = self.request(method, path, body, **kw)
        if 200 <= status < 300:
            return answer
        raise AdminApiError(status, error_message(answer, status), answer)

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("POST", path, body, **kw)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)


def error_message(answer: Any, status: int) -> str:
    message = answer.get("error") if isinstance(answer, dict) else None
    return str(message) if message else f"HTTP {status} without an error message"


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None
