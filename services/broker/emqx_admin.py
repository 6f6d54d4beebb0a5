"""Add and remove station logins on EMQX (compose) through its REST API.

The bootstrap file that `medsec compose-init` writes covers the service accounts;
stations register later, so their logins go into EMQX's built-in database over
`/api/v5`, with the API key compose-init generated (`secrets/emqx-api-key`,
"key:secret", the same line EMQX reads as its api_key bootstrap file). Their rights
need nothing here: acl.conf already grants `station-<id>` its own subtree.
"""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from services.broker import BrokerError
from services.common.config import Config
from services.common.state import StateError, read_secret

USERS = "/api/v5/authentication/password_based%3Abuilt_in_database/users"
CLIENTS = "/api/v5/clients"


def api_key_path(config: Config) -> Path:
    return config.secrets_dir / "emqx-api-key"


def _request(config: Config, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
    key_path = api_key_path(config)
    if not key_path.exists():
        raise BrokerError(f"no EMQX API key at {key_path}: give this container the emqx_api_key secret "
                          "(`medsec compose-init` makes it)")
    try:
        key = read_secret(key_path).decode().strip()
    except (OSError, StateError) as exc:
        raise BrokerError(f"the EMQX API key cannot be read: {exc}") from None
    request = urllib.request.Request(
        config.emqx_api_url.rstrip("/") + path, method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": "Basic " + base64.b64encode(key.encode()).decode(),
                 "Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise BrokerError(f"cannot reach EMQX's API at {config.emqx_api_url}: {exc}") from None
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def _user(account: str) -> str:
    return f"{USERS}/{urllib.parse.quote(account, safe='')}"


def _check(status: int, doc: Any, what: str, ok: tuple[int, ...]) -> None:
    if status not in ok:
        message = (doc.get("message") or doc.get("code")) if isinstance(doc, dict) else None
        detail = f": {message}" if message else ""
        raise BrokerError(f"EMQX refused to {what} (HTTP {status}{detail})")


def add_login(config: Config, account: str, password: str) -> None:
    """Create the login, or set its password if EMQX has it already (a retried registration)."""
    status, doc = _request(config, "POST", USERS,
                           {"user_id": account, "password": password, "is_superuser": False})
    if status == 409:
        status, doc = _request(config, "PUT", _user(account),
                               {"password": password, "is_superuser": False})
    _check(status, doc, f"create the login {account}", (200, 201))


def remove_login(config: Config, account: str) -> None:
    """Delete the login, then disconnect every client logged in with it."""
    status, doc = _request(config, "DELETE", _user(account))
    _check(status, doc, f"delete the login {account}", (204, 404))
    status, doc = _request(config, "GET", f"{CLIENTS}?username={urllib.parse.quote(account, safe='')}")
    _check(status, doc, f"list the clients of {account}", (200,))
    for client in (doc or {}).get("data", []):
        clientid = urllib.parse.quote(str(client.get("clientid", "")), safe="")
        status, doc = _request(config, "DELETE", f"{CLIENTS}/{clientid}")
        _check(status, doc, f"disconnect a client of {account}", (204, 404))
