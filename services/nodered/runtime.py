"""Generate Node-RED's settings and userDir in the state directory; return how to run it.

Node-RED never reads secrets/: everything it needs (its logins' password hashes, its credential
secret, the `dashboard` broker password, its read and manage key-admin tokens) is rendered into its own
secrets.json in its userDir, readable by its OS user only (services/nodered/osuser.py).
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path

from services.common.accounts import NODERED_ACCOUNTS
from services.common.config import Config
from services.common.state import StateError, load_passwords, read_secret, service_token, write_secret
from services.nodered import credentials, osuser

NODERED_DIR = Path(__file__).resolve().parents[2] / "nodered"
SHIPPED_FLOWS = NODERED_DIR / "flows.json"
RED_JS = NODERED_DIR / "node_modules" / "node-red" / "red.js"
# The settings' role checks (HTTP Basic, the socket's pages, the editor) live in the package.
ACCESS_LIB = NODERED_DIR / "node-red-contrib-medsec" / "nodes" / "lib" / "access.js"
TEMPLATE = Path(__file__).with_name("settings.js.tmpl")
SECRETS_FILE = "secrets.json"

# Node-RED logins: user name -> generated account (`medsec password nodered-<user>`).
LOGINS = {account.removeprefix("nodered-"): account for account in NODERED_ACCOUNTS}
ADMIN_USER = "admin"
ADMIN_ACCOUNT = LOGINS[ADMIN_USER]
CREDENTIAL_SECRET = "nodered-credential.secret"
# What the shipped flow's medsec-gateway credentials point at (set by settings.js).
# Two key-admin tokens (issue 15): `token` (scope read) for every GET, `manageToken` (scope manage)
# for the Devices page's writes, which the devices node allows only to operator and admin sessions.
GATEWAY_CREDENTIALS = {"password": "${MEDSEC_NR_MQTT_PASSWORD}", "token": "${MEDSEC_NR_READ_TOKEN}",
                       "manageToken": "${MEDSEC_NR_MANAGE_TOKEN}"}


def available() -> bool:
    """Is the Node-RED runtime installed (`make -C nodered install`) and node on the PATH?"""
    return RED_JS.exists() and ACCESS_LIB.exists() and shutil.which("node") is not None


def userdir(config: Config) -> Path:
    return config.home / "nodered"


def login_password(config: Config, user: str) -> str:
    """The password of Node-RED login `user` (viewer, operator, admin); generated once."""
    account = LOGINS[user]
    passwords = load_passwords(config)
    if account not in passwords:
        passwords[account] = secrets.token_urlsafe(24)
        write_secret(config.mqtt_passwords_path, json.dumps(passwords, indent=1).encode())
    return passwords[account]


def admin_password(config: Config) -> str:
    """The editor's login (user `admin`)."""
    return login_password(config, ADMIN_USER)


def credential_secret(config: Config) -> str:
    path = config.secrets_dir / CREDENTIAL_SECRET
    if not path.exists():
        write_secret(path, secrets.token_urlsafe(32).encode() + b"\n")
    return read_secret(path).decode().strip()


def nodered_secrets(config: Config) -> dict:
    """What Node-RED may know: its logins as SHA-256 hashes with their roles, and its own secrets."""
    users = {user: {"role": user, "sha256": hashlib.sha256(login_password(config, user).encode()).hexdigest()}
             for user in LOGINS}
    return {
        "users": users,
        "credentialSecret": credential_secret(config),
        "mqttPassword": load_passwords(config)["dashboard"],
        "readToken": service_token(config, "nodered-read"),
        "manageToken": service_token(config, "nodered-manage"),
    }


def render(template: str, values: dict[str, object]) -> str:
    """Fill the @NAME@ placeholders with JSON values (the container renders the same way)."""
    for key, value in values.items():
        template = template.replace(f"@{key}@", json.dumps(value))
    return template


def settings_js(config: Config, user_dir: Path) -> str:
    return render(TEMPLATE.read_text(), {
        "SECRETS_FILE": str(user_dir / SECRETS_FILE),
        "ACCESS_LIB": str(ACCESS_LIB),
        "MQTT_URL": f"mqtt://{config.host}:{config.mqtt_port}",
        "ADMIN_URL": config.admin_url,
        "HOST": config.host,
        "PORT": config.nodered_port,
        "USERDIR": str(user_dir),
    })


def install_flows(config: Config, user_dir: Path, shipped: Path = SHIPPED_FLOWS) -> bool:
    """Copy the shipped flows into the userDir when they changed since the last copy.

    Edits made in the editor survive restarts until a new version of nodered/flows.json
    ships. Returns whether the flows were (re)installed.
    """
    data = shipped.read_bytes()
    # The credential references count too: a new one (e.g. a token's) rewrites flows_cred.json.
    digest = hashlib.sha256(data + json.dumps(GATEWAY_CREDENTIALS, sort_keys=True).encode()).hexdigest()
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


def prepare(config: Config) -> tuple[list[str], dict[str, str], osuser.OsUser | None]:
    """Write settings.js, secrets.json and the userDir under the state directory.

    Returns (argv, env, user): run argv with env as `user` (None: as the current user).
    Raises osuser.UnreachableHome when Node-RED's own user could not reach its userDir.
    """
    admin_password(config)  # first: a state directory that is not initialised is refused untouched
    user_dir = userdir(config)
    user_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(user_dir, 0o700)
    install_flows(config, user_dir)
    write_secret(user_dir / SECRETS_FILE, json.dumps(nodered_secrets(config), indent=1).encode())
    settings = user_dir / "settings.js"
    write_secret(settings, settings_js(config, user_dir).encode())
    user = None
    if osuser.needed():
        user = osuser.ensure_user()
        osuser.grant_userdir(config.home, user_dir, user)
    node = shutil.which("node") or "node"
    argv = [node, str(RED_JS), "--settings", str(settings), "--userDir", str(user_dir)]
    env = {"NODE_ENV": "production", "HOME": str(user_dir)}
    return argv, env, user
