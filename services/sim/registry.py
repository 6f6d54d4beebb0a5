"""The simulator's devices: registered through the key-admin API, credentials kept in the state dir.

`config.home / "sim-devices.json"` (0600) holds what the API returned when the
sim registered each device, so reruns and `medsec up --demo N` reuse them.
"""
from __future__ import annotations

import json
from pathlib import Path

from services.common.adminclient import AdminApiError, AdminClient, quote
from services.common.config import Config, valid_device_id
from services.common.state import StateError, check_private, write_secret
from services.sim.devices import Credentials

FILE_NAME = "sim-devices.json"
SAVE_EVERY = 100  # registrations between saves of the credentials file (10,000 devices: 100 writes)
# What GET /devices/<id> shows anyway: not credentials, not worth keeping.
PUBLIC_FIELDS = frozenset({"id", "protocol", "credentials", "state", "created_at", "revoked_at", "last_seen",
                           "readings", "rejected", "connections"})


class RegistryError(Exception):
    """Registration failed; the message is for the user and never holds a secret."""


def store_path(config: Config) -> Path:
    return config.home / FILE_NAME


def load(config: Config) -> dict[str, Credentials]:
    path = store_path(config)
    if not path.exists():
        return {}
    try:
        check_private(path)
        doc = json.loads(path.read_text())
        return {d: Credentials.from_json(obj) for d, obj in doc["devices"].items()}
    except (StateError, ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"{path} is unusable ({exc}); delete it and rerun with --register") from None


def save(config: Config, devices: dict[str, Credentials]) -> None:
    doc = {"version": 1, "devices": {d: c.to_json() for d, c in sorted(devices.items())}}
    config.home.mkdir(parents=True, exist_ok=True)
    write_secret(store_path(config), json.dumps(doc, indent=1).encode())


def device_ids(count: int, prefix: str) -> list[str]:
    width = max(3, len(str(count)))
    ids = [f"{prefix}{i:0{width}d}" for i in range(1, count + 1)]
    bad = [d for d in ids[:1] + ids[-1:] if not valid_device_id(d)]
    if bad:
        raise RegistryError(f"prefix {prefix!r} gives invalid device ids such as {bad[0]!r} "
                            "(1-64 of A-Z a-z 0-9 _ . -)")
    return ids


def admin_client(config: Config) -> AdminClient:
    """The key-admin client, waiting up to 15 s for an API that is still starting."""
    try:
        return AdminClient.from_config(config, timeout=10, wait=15.0)
    except AdminApiError as exc:
        raise RegistryError(exc.message) from None


def _request(api: AdminClient, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
    try:
        return api.request(method, path, body)
    except AdminApiError as exc:  # not reachable within the wait
        raise RegistryError(exc.message) from None


def _error(status: int, body: object) -> str:
    message = body.get("error") if isinstance(body, dict) else None
    return f"HTTP {status}: {message or 'no error message'}"


def _credentials(device: str, protocol: str, body: object) -> Credentials:
    if not isinstance(body, dict):
        raise RegistryError(f"key-admin API returned no credentials for {device}")
    nested = body.get("credentials")
    fields = nested if isinstance(nested, dict) else body  # tolerate {"id", "credentials": {...}} too
    # Keep every scalar the API returned (v2 devices need more than key and iv); the file is 0600.
    secrets = {k: str(v) for k, v in fields.items()
               if k not in PUBLIC_FIELDS and isinstance(v, (str, int)) and not isinstance(v, bool)}
    if protocol == "v1" and not ("key" in secrets and "iv" in secrets):
        raise RegistryError(f"key-admin API returned no v1 key and iv for {device}")
    return Credentials(id=device, protocol=protocol, secrets=secrets)


def ensure_devices(config: Config, count: int, protocol: str = "v1", prefix: str = "sim-",
                   register: bool = True, api: AdminClient | None = None) -> list[Credentials]:
    """The credentials of devices <prefix>001..N: stored ones reused, missing ones registered.

    Without `register`, every device must already be in sim-devices.json.
    """
    ids = device_ids(count, prefix)
    stored = load(config)
    if not register:
        missing = [d for d in ids if d not in stored or stored[d].protocol != protocol]
        if missing:
            raise RegistryError(f"{len(missing)} device(s) such as {missing[0]} have no {protocol} "
                                f"credentials in {store_path(config)}; rerun with --register")
        return [stored[d] for d in ids]
    api = api or admin_client(config)
    known = _registered(api)
    result = []
    unsaved = 0
    try:
        for device in ids:
            creds = stored.get(device)
            server_protocol = known.get(device) if known is not None else _lookup(api, device)
            if creds is not None and creds.protocol == protocol and server_protocol == protocol:
                result.append(creds)
                continue
            if server_protocol is not None and server_protocol != protocol:
                raise RegistryError(f"device {device} is registered as {server_protocol}, not {protocol}; "
                                    "use another --prefix")
            creds = _rotate(api, device, protocol) if server_protocol else _add(api, device, protocol)
            stored[device] = creds
            unsaved += 1
            if unsaved >= SAVE_EVERY:
                save(config, stored)
                unsaved = 0
            result.append(creds)
    finally:
        if unsaved:
            save(config, stored)  # also when interrupted: keep what was registered
    return result


def _registered(api: AdminClient) -> dict[str, str] | None:
    """{device: protocol} of every registered device, or None if the list is not usable."""
    status, body = _request(api, "GET", "/devices")
    if status == 401:
        raise RegistryError("key-admin API refused the admin token (HTTP 401)")
    if status != 200:
        return None
    items = body.get("devices") if isinstance(body, dict) else body
    if not isinstance(items, list):
        return None
    out = {}
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            if item.get("state", item.get("status")) in ("revoked",) or item.get("revoked"):
                continue
            out[item["id"]] = str(item.get("protocol", "v1"))
    return out


def _lookup(api: AdminClient, device: str) -> str | None:
    status, body = _request(api, "GET", f"/devices/{quote(device)}")
    if status == 200 and isinstance(body, dict):
        return str(body.get("protocol", "v1"))
    if status == 404:
        return None
    raise RegistryError(f"cannot look up {device}: {_error(status, body)}")


def _add(api: AdminClient, device: str, protocol: str) -> Credentials:
    status, body = _request(api, "POST", "/devices", {"id": device, "protocol": protocol})
    if status in (200, 201):
        return _credentials(device, protocol, body)
    if status == 409:
        return _rotate(api, device, protocol)
    raise RegistryError(f"cannot register {device}: {_error(status, body)}")


def _rotate(api: AdminClient, device: str, protocol: str) -> Credentials:
    """A sim device registered earlier whose credentials were lost: give it new ones."""
    status, body = _request(api, "POST", f"/devices/{quote(device)}/rotate")
    if status in (200, 201):
        return _credentials(device, protocol, body)
    raise RegistryError(
        f"device {device} is registered but its credentials are not in sim-devices.json and rotating it "
        f"failed ({_error(status, body)}); revoke it (medsec device revoke {device}) or use another --prefix")
