"""Generate Node-RED's settings and userDir in the state directory; return how to run it."""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path

from services.common.config import Config
from services.common.state import StateError, load_passwords, read_secret, write_secret
from services.nodered import credentials

NODERED_DIR = Path(__file__).resolve().parents[2] / "nodered"
SHIPPED_FLOWS = NODERED_DIR / "flows.json"
RED_JS = NODERED_DIR / "node_modules" / "node-red" / "red.js"
BCRYPTJS = NODERED_DIR / "node_modules" / "bcryptjs"
TEMPLATE = Path(__file__).with_name("settings.js.tmpl")

ADMIN_USER = "admin"
# The editor's password lives with the generated broker passwords (`medsec mqtt-password nodered-admin`).
ADMIN_ACCOUNT = "nodered-admin"
CREDENTIAL_SECRET = "nodered-credential.secret"
# What the shipped flow's medsec-gateway credentials point at (set by settings.js).
GATEWAY_CREDENTIALS = {"password": "${MEDSEC_NR_MQTT_PASSWORD}", "token": "${MEDSEC_NR_ADMIN_TOKEN}"}


def available() -> bool:
    """Is the Node-RED runtime installed (`make -C nodered install`) and node on the PATH?"""
    return RED_JS.exists() and BCRYPTJS.exists() and shutil.which("node") is not None


def userdir(config: Config) -> Path:
    return config.home / "nodered"


def admin_password(config: Config) -> str:
    """The editor and dashboard password of user `admin`; generated once."""
    passwords = load_passwords(config)
    if ADMIN_ACCOUNT not in passwords:
        passwords[ADMIN_ACCOUNT] = secrets.token_urlsafe(18)
        write_secret(config.mqtt_passwords_path, json.dumps(passwords, indent=1).encode())
    return passwords[ADMIN_ACCOUNT]


def credential_secret(config: Config) -> str:
    path = config.secrets_dir / CREDENTIAL_SECRET
    if not path.exists():
        write_secret(path, secrets.token_urlsafe(32).encode() + b"\n")
    return read_secret(path).decode().strip()


def settings_js(config: Config, user_dir: Path) -> str:
    values = {
        "SECRETS": str(config.secrets_dir),
        "BCRYPTJS": str(BCRYPTJS),
        "ADMIN_ACCOUNT": ADMIN_ACCOUNT,
        "ADMIN_USER": ADMIN_USER,
        "MQTT_URL": f"mqtt://{config.host}:{config.mqtt_port}",
        "ADMIN_URL": config.admin_url,
        "HOST": config.host,
        "PORT": config.nodered_port,
        "USERDIR": str(user_dir),
    }
    text = TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", json.dumps(value))
    return text


def install_flows(config: Config, user_dir: Path, shipped: Path = SHIPPED_FLOWS) -> bool:
    """Copy the shipped flows into the userDir when they changed since the last copy.

    Edits made in the editor survive restarts until a new version of nodered/flows.json
    ships. Returns whether the flows were (re)installed.
    """
    data = shipped.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    marker = user_dir / ".flows.shipped.sha256"
    target = user_dir / "flows.json"
    if target.exists() and marker.exists() and marker.read_text().strip() == digest:
        return False
    try:
        flow = json.loads(data)
    except ValueError as exc:
        raise StateError(f"{shipped} is not valid JSON: {exc}") from None
    gateways = [n["id"] for n in flow if isinstance(n, dict) and n.get("type") == "medsec-gateway"]
    creds = {gid: dict(GATEWAY_CREDENTIALS) for gid in gateways}
    blob = credentials.encrypt(creds, credential_secret(config))
    write_secret(user_dir / "flows_cred.json", json.dumps(blob).encode())
    write_secret(target, data)
    marker.write_text(digest + "\n")
    return True


def prepare(config: Config) -> tuple[list[str], dict[str, str]]:
    """Write settings.js and the userDir under the state directory; return (argv, env)."""
    admin_password(config)  # first: a state directory that is not initialised is refused untouched
    credential_secret(config)
    user_dir = userdir(config)
    user_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(user_dir, 0o700)
    install_flows(config, user_dir)
    settings = user_dir / "settings.js"
    write_secret(settings, settings_js(config, user_dir).encode())
    node = shutil.which("node") or "node"
    argv = [node, str(RED_JS), "--settings", str(settings), "--userDir", str(user_dir)]
    env = {"NODE_ENV": "production"}
    return argv, env
