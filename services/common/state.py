"""The state directory: created 0700, secrets written 0600, generated once.

Secrets are generated here at first start and never have defaults.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

from services.common.accounts import ACCOUNTS, NODERED_ACCOUNTS
from services.common.config import Config


class StateError(Exception):
    """The state directory is unusable (bad permissions, unreadable secret)."""


def ensure_dirs(config: Config) -> None:
    for path in (config.home, config.secrets_dir, config.run_dir, config.logs_dir, config.broker_dir):
        path.mkdir(parents=True, exist_ok=True)
        # The home keeps the group passage (0710) Node-RED's own OS user was given to reach
        # its userDir (services/nodered/osuser.py); everything else is the owner's alone.
        passage = path.stat().st_mode & 0o010 if path == config.home else 0
        os.chmod(path, 0o700 | passage)


def write_secret(path: Path, data: bytes) -> None:
    """Write a file that only its owner can read, atomically (never a partial secret)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def check_private(path: Path) -> None:
    """Refuse a secret file that group or others can read or write."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise StateError(f"{path} has permissions {mode:o}; it must be 0600 (chmod 600 {path})")


def read_secret(path: Path) -> bytes:
    if not path.exists():
        raise StateError(f"{path} is missing; run `medsec up` once to initialise the state directory")
    check_private(path)
    return path.read_bytes()


def generate_password() -> str:
    return secrets.token_urlsafe(24)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# Key-admin tokens generated at first start for the services that call the API, with the least
# scope each needs: name -> scope. Each is secrets/<name>.token (the value, for its holder) and
# <name>.token.sha256 (what keyadmin registers at start); the operator's own is admin.token.
SERVICE_TOKENS = {
    "nodered-read": "read",  # Node-RED's dashboard pages: devices and their state
    "nodered-manage": "manage",  # Node-RED's Devices page: add, rotate, revoke
    "dispatch": "stations:read",  # dispatch: station public keys only
}


def service_token_path(config: Config, name: str) -> Path:
    return config.secrets_dir / f"{name}.token"


def service_token_hash_path(config: Config, name: str) -> Path:
    return config.secrets_dir / f"{name}.token.sha256"


def service_token(config: Config, name: str) -> str:
    """The value of generated token `name` (SERVICE_TOKENS), for the service that holds it."""
    return read_secret(service_token_path(config, name)).decode().strip()


def set_service_token(config: Config, name: str, token: str | None = None) -> str:
    token = token or secrets.token_urlsafe(32)
    write_secret(service_token_path(config, name), token.encode() + b"\n")
    write_secret(service_token_hash_path(config, name), hash_token(token).encode() + b"\n")
    return token


def set_admin_token(config: Config, token: str | None = None) -> str:
    token = token or secrets.token_urlsafe(32)
    write_secret(config.admin_token_path, token.encode() + b"\n")
    write_secret(config.admin_token_hash_path, hash_token(token).encode() + b"\n")
    return token


def init_state(config: Config) -> None:
    """Create everything a first start needs; keep whatever exists already."""
    ensure_dirs(config)
    if not config.master_key_path.exists():
        write_secret(config.master_key_path, secrets.token_bytes(32))
    if not config.admin_token_path.exists() or not config.admin_token_hash_path.exists():
        set_admin_token(config)
    for name in SERVICE_TOKENS:
        paths = (service_token_path(config, name), service_token_hash_path(config, name))
        if not all(p.exists() for p in paths):
            set_service_token(config, name)
    passwords = load_passwords(config) if config.mqtt_passwords_path.exists() else {}
    missing = [a for a in ACCOUNTS + NODERED_ACCOUNTS if a not in passwords]
    if missing:
        passwords.update({a: generate_password() for a in missing})
        write_secret(config.mqtt_passwords_path, json.dumps(passwords, indent=1).encode())


def load_passwords(config: Config) -> dict[str, str]:
    try:
        return dict(json.loads(read_secret(config.mqtt_passwords_path)))
    except (ValueError, TypeError) as exc:
        raise StateError(f"{config.mqtt_passwords_path} is not valid JSON: {exc}") from None


def mqtt_password(config: Config, account: str) -> str:
    passwords = load_passwords(config)
    if account not in passwords:
        raise StateError(f"no broker account {account!r}; accounts: {', '.join(sorted(passwords))}")
    return passwords[account]


def generated_password(config: Config, account: str) -> str:
    """Any generated password: a broker account's, a station's or a Node-RED login's."""
    passwords = load_passwords(config)
    if account not in passwords:
        raise StateError(f"no generated password for {account!r}; accounts: {', '.join(sorted(passwords))}")
    return passwords[account]


def admin_token(config: Config) -> str:
    return read_secret(config.admin_token_path).decode().strip()
