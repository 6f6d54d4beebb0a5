"""prepare(): the files it writes, the credentials format Node-RED reads, the shipped flows."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from services.common.accounts import NODERED_ACCOUNTS
from services.common.state import admin_token, init_state, load_passwords, service_token
from services.nodered import credentials, osuser, runtime
from services.nodered.runtime import ADMIN_ACCOUNT, LOGINS, install_flows, prepare

from .support import needs_nodered

FLOWS = json.loads(runtime.SHIPPED_FLOWS.read_text())


def test_credentials_round_trip():
    plain = {"gw": {"password": "p4ssw0rd", "token": "t0ken"}}
    blob = credentials.encrypt(plain, "secret")
    assert set(blob) == {"$"}
    assert "p4ssw0rd" not in blob["$"] and "t0ken" not in blob["$"]
    assert credentials.decrypt(blob, "secret") == plain
    with pytest.raises(ValueError):  # another secret yields garbage, never the credentials
        credentials.decrypt(blob, "another secret")


@needs_nodered
def test_node_red_decrypts_what_we_write():
    """The exact algorithm of @node-red/runtime/lib/nodes/credentials.js, run by node."""
    blob = credentials.encrypt({"medsec.gateway": {"token": "${MEDSEC_NR_READ_TOKEN}"}}, "s3cret")
    script = (
        "const c=require('crypto');const b=JSON.parse(process.argv[1]);const k=c.createHash('sha256')"
        ".update('s3cret').digest();const iv=Buffer.from(b.$.substring(0,32),'hex');"
        "const d=c.createDecipheriv('aes-256-ctr',k,iv);"
        "process.stdout.write(d.update(b.$.substring(32),'base64','utf8')+d.final('utf8'))"
    )
    out = subprocess.run(["node", "-e", script, json.dumps(blob)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"medsec.gateway": {"token": "${MEDSEC_NR_READ_TOKEN}"}}


def test_prepare_writes_private_files_without_secrets(config):
    init_state(config)
    argv, env, user = prepare(config)
    user_dir = config.home / "nodered"
    assert stat.S_IMODE(user_dir.stat().st_mode) == 0o700
    for name in ("settings.js", "flows.json", "flows_cred.json", "secrets.json"):
        assert stat.S_IMODE((user_dir / name).stat().st_mode) == 0o600, name
    assert argv[-4:] == ["--settings", str(user_dir / "settings.js"), "--userDir", str(user_dir)]
    passwords = load_passwords(config)
    assert set(NODERED_ACCOUNTS) <= set(passwords)
    assert set(LOGINS) == {"viewer", "operator", "admin"}
    secrets_written = [
        passwords["dashboard"],
        *(passwords[a] for a in NODERED_ACCOUNTS),
        (config.secrets_dir / "admin.token").read_text().strip(),
        (config.secrets_dir / "nodered-credential.secret").read_text().strip(),
    ]
    generated = "".join((user_dir / n).read_text() for n in ("settings.js", "flows.json", "flows_cred.json"))
    generated += " ".join(argv) + json.dumps(env)
    for secret in secrets_written:
        assert secret not in generated
    # Node-RED's own secrets: its logins only as hashes, never a login's password.
    own = json.loads((user_dir / "secrets.json").read_text())
    assert {u: e["role"] for u, e in own["users"].items()} == {"viewer": "viewer", "operator": "operator",
                                                                "admin": "admin"}
    for account in NODERED_ACCOUNTS:
        assert passwords[account] not in json.dumps(own)
    settings = (user_dir / "settings.js").read_text()
    assert f"uiPort: {config.nodered_port}" in settings
    assert 'uiHost: "127.0.0.1"' in settings
    assert str(config.secrets_dir) not in settings, "Node-RED never reads secrets/"
    # The gateway credentials are environment references, encrypted with the credential secret.
    creds = credentials.decrypt(json.loads((user_dir / "flows_cred.json").read_text()), secrets_written[-1])
    assert creds == {"medsec.gateway": runtime.GATEWAY_CREDENTIALS}
    assert runtime.GATEWAY_CREDENTIALS == {
        "password": "${MEDSEC_NR_MQTT_PASSWORD}", "token": "${MEDSEC_NR_READ_TOKEN}",
        "manageToken": "${MEDSEC_NR_MANAGE_TOKEN}"}
    # Scoped tokens only (issue 15): the read one for the pages, the manage one for the Devices
    # page; never the operator's admin token.
    assert own["readToken"] == service_token(config, "nodered-read")
    assert own["manageToken"] == service_token(config, "nodered-manage")
    assert admin_token(config) not in json.dumps(own)


@pytest.mark.skipif(not osuser.needed(), reason="only root can run Node-RED as another user")
def test_prepare_as_root_hands_the_userdir_to_node_reds_own_user(config):
    init_state(config)
    _, _, user = prepare(config)
    assert user is not None and user.name == osuser.USER and user.uid != 0
    user_dir = config.home / "nodered"
    for path in [user_dir, *user_dir.iterdir()]:
        assert path.stat().st_uid == user.uid, path
    home = config.home.stat()
    assert stat.S_IMODE(home.st_mode) == 0o710 and home.st_gid == user.gid
    assert config.secrets_dir.stat().st_uid == 0 and stat.S_IMODE(config.secrets_dir.stat().st_mode) == 0o700
    # A later init_state keeps the passage (Node-RED must still reach its userDir).
    init_state(config)
    assert stat.S_IMODE(config.home.stat().st_mode) == 0o710
    # What Node-RED's user can open, checked by that user: its own files, none of secrets/.
    for path, readable in ((user_dir / "secrets.json", True), (user_dir / "settings.js", True),
                           (config.master_key_path, False), (config.mqtt_passwords_path, False),
                           (config.admin_token_path, False)):
        result = subprocess.run(["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups",
                                 "head", "-c", "1", str(path)], capture_output=True, text=True, timeout=30)
        assert (result.returncode == 0) == readable, (path, result.stderr)
        if not readable:
            assert "Permission denied" in result.stderr, result.stderr


@pytest.mark.skipif(not osuser.needed(), reason="only root can run Node-RED as another user")
def test_an_unreachable_home_is_refused_not_run_as_root(tmp_path):
    """pytest's own temporary directories are closed to other users: Node-RED is not started."""
    from services.common.config import Config

    closed = Config(home=tmp_path / "closed" / "home")
    os.makedirs(tmp_path / "closed", mode=0o700)
    init_state(closed)
    with pytest.raises(osuser.UnreachableHome, match="cannot reach"):
        prepare(closed)


def test_prepare_again_keeps_secrets_and_editor_changes(config, tmp_path):
    init_state(config)
    prepare(config)
    first = load_passwords(config)[ADMIN_ACCOUNT]
    secret = (config.secrets_dir / "nodered-credential.secret").read_text()
    flows = config.home / "nodered" / "flows.json"
    flows.write_text('[{"id": "edited-in-the-editor", "type": "tab"}]')
    prepare(config)
    assert load_passwords(config)[ADMIN_ACCOUNT] == first
    assert (config.secrets_dir / "nodered-credential.secret").read_text() == secret
    assert "edited-in-the-editor" in flows.read_text(), "a restart must not undo the operator's edits"
    # A new version of the shipped flows replaces them.
    shipped = tmp_path / "flows.json"
    shipped.write_text(json.dumps(FLOWS[:3]))
    assert install_flows(config, config.home / "nodered", shipped) is True
    assert json.loads(flows.read_text()) == FLOWS[:3]
    assert install_flows(config, config.home / "nodered", shipped) is False


def test_bad_shipped_flows_are_a_clear_error(config, tmp_path):
    init_state(config)
    (config.home / "nodered").mkdir()
    shipped = tmp_path / "flows.json"
    shipped.write_text("[{oops")
    with pytest.raises(runtime.StateError, match="not valid JSON"):
        install_flows(config, config.home / "nodered", shipped)


def test_shipped_flows_name_no_device_and_hold_no_secret():
    """Devices appear by themselves: no node is tied to a device id; no credentials in the file."""
    types = {n["type"] for n in FLOWS}
    assert {"medsec-gateway", "medsec-vitals", "medsec-status", "medsec-alert", "medsec-devices",
            "medsec-history"} <= types
    # The Device page draws its charts itself (ui-template): history and live readings on one time axis.
    assert {"ui-base", "ui-page", "ui-template", "ui-table"} <= types
    assert {n["name"] for n in FLOWS if n["type"] == "ui-page"} == {"Fleet", "Device", "Alerts", "Devices"}
    for node in FLOWS:
        assert not node.get("device"), f"{node['id']} is tied to device {node.get('device')}"
        assert "credentials" not in node
    text = runtime.SHIPPED_FLOWS.read_text()
    assert "Pico/" not in text, "topics come from the medsec nodes, not hand-written per device"
    gateway = next(n for n in FLOWS if n["type"] == "medsec-gateway")
    assert gateway["broker"] == "${MEDSEC_NR_MQTT_URL}"
    assert gateway["adminUrl"] == "${MEDSEC_NR_ADMIN_URL}"
    # Every wire points at a node that exists.
    ids = {n["id"] for n in FLOWS}
    for node in FLOWS:
        for output in node.get("wires", []):
            for target in output:
                assert target in ids, f"{node['id']} wired to missing {target}"


def test_shipped_flows_match_their_source():
    """nodered/flows.json is built from nodered/tools/build_flows.py: never out of step."""
    tool = runtime.NODERED_DIR / "tools" / "build_flows.py"
    result = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@needs_nodered
def test_main_refuses_an_uninitialised_state_dir(config, config_env):
    """No state directory yet: one clear log line and exit 2, no traceback, no Node-RED."""
    result = subprocess.run([sys.executable, "-m", "services.nodered"], env={**os.environ, **config_env},
                            capture_output=True, text=True, timeout=30, cwd=runtime.NODERED_DIR.parent)
    assert result.returncode == 2
    assert "event=cannot_prepare" in result.stderr and "Traceback" not in result.stderr
    assert not config.home.exists()


RENDER = runtime.NODERED_DIR / "tools" / "render-settings.js"
CONTAINER_SECRETS = {
    "nodered_viewer_password": "viewer-pw-0123456789", "nodered_operator_password": "op-pw-0123456789",
    "nodered_admin_password": "admin-pw-0123456789", "mqtt_dashboard": "mqtt-pw-0123456789",
    "nodered_read_token": "read-token-0123456789", "nodered_manage_token": "manage-token-0123456789",
    "nodered_credential_secret": "cred-0123456789"}
LOGIN_SECRETS = ["nodered_viewer_password", "nodered_operator_password", "nodered_admin_password"]


def render_container(tmp_path, secrets: dict[str, str]) -> subprocess.CompletedProcess:
    secrets_dir = tmp_path / "run-secrets"
    secrets_dir.mkdir(exist_ok=True)
    for name, value in secrets.items():
        (secrets_dir / name).write_text(value + "\n")
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "MEDSEC_SECRETS_DIR": str(secrets_dir), "MEDSEC_NR_HOST": "127.0.0.1",
           "MEDSEC_NR_PORT": "1881", "MEDSEC_NR_MQTT_URL": "mqtt://emqx:1883",
           "MEDSEC_NR_ADMIN_URL": "http://keyadmin:8080/api/v1"}
    argv = ["node", str(RENDER), str(runtime.TEMPLATE), str(data)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=runtime.NODERED_DIR)


@needs_nodered
def test_the_container_renders_the_same_template_with_the_same_checks(tmp_path):
    """One source: the container's settings are the local template rendered the same way."""
    result = render_container(tmp_path, CONTAINER_SECRETS)
    assert result.returncode == 0, result.stderr
    data = tmp_path / "data"
    settings = (data / "settings.js").read_text()
    assert settings == runtime.render(runtime.TEMPLATE.read_text(), {
        "SECRETS_FILE": str(data / "secrets.json"), "ACCESS_LIB": str(runtime.ACCESS_LIB.resolve()),
        "MQTT_URL": "mqtt://emqx:1883", "ADMIN_URL": "http://keyadmin:8080/api/v1", "HOST": "127.0.0.1",
        "PORT": 1881, "USERDIR": str(data)})
    for name in ("settings.js", "secrets.json"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    everything = settings + (data / "secrets.json").read_text()
    for name in LOGIN_SECRETS:
        assert CONTAINER_SECRETS[name] not in everything, name
    # Node loads it: the editor for admin only, the dashboard's HTTP and socket checks in place.
    probe = ("const s = require(process.argv[1]); const users = ['viewer', 'operator', 'admin'];"
             "Promise.all(users.map((u, i) => s.adminAuth.authenticate(u, process.argv[2 + i])))"
             ".then((r) => console.log(JSON.stringify({"
             "editor: r, node: typeof s.httpNodeAuth, admin: typeof s.httpAdminMiddleware,"
             "io: typeof s.dashboard.ioMiddleware, token: process.env.MEDSEC_NR_READ_TOKEN,"
             "host: s.uiHost})))")
    argv = ["node", "-e", probe, str(data / "settings.js"), *(CONTAINER_SECRETS[n] for n in LOGIN_SECRETS)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    loaded = json.loads(out.stdout)
    assert loaded["editor"] == [None, None, {"username": "admin", "permissions": "*"}]
    assert (loaded["node"], loaded["admin"], loaded["io"]) == ("function", "function", "function")
    assert loaded["token"] == CONTAINER_SECRETS["nodered_read_token"] and loaded["host"] == "127.0.0.1"


@needs_nodered
def test_the_container_refuses_to_start_without_an_admin_login(tmp_path):
    missing = {k: v for k, v in CONTAINER_SECRETS.items() if k != "nodered_admin_password"}
    result = render_container(tmp_path, missing)
    assert result.returncode == 2 and "nodered_admin_password" in result.stderr
    assert not (tmp_path / "data" / "settings.js").exists()
    # A deployment made before the roles keeps its editor password as the admin's.
    result = render_container(tmp_path, {**missing, "nodered_editor_password": "old-editor-pw-0123"})
    assert result.returncode == 0, result.stderr
    own = json.loads((tmp_path / "data" / "secrets.json").read_text())
    assert set(own["users"]) == {"viewer", "operator", "admin"}


@needs_nodered
@pytest.mark.skipif(not osuser.needed(), reason="only root can run Node-RED as another user")
def test_supervisord_runs_node_red_as_its_own_user_or_not_at_all(config, tmp_path, caplog):
    from services.common.config import Config
    from services.stack.programs import programs, supervisord_conf

    init_state(config)
    progs = {p.name: p for p in programs(config, tmp_path / "broker.conf")}
    assert progs["nodered"].user == osuser.USER and progs["auth"].user is None
    conf = supervisord_conf(config, list(progs.values()), daemon=True)
    section = conf.split("[program:nodered]")[1].split("[program:")[0]
    assert f"user={osuser.USER}" in section
    assert conf.count("user=") == 1, "every other service stays the state directory's owner"
    # A home its user cannot reach: the stack starts without Node-RED, saying why; never as root.
    closed = Config(home=tmp_path / "closed" / "home")
    os.makedirs(tmp_path / "closed", mode=0o700)
    init_state(closed)
    names = [p.name for p in programs(closed, tmp_path / "broker.conf")]
    assert "nodered" not in names and "auth" in names
    assert "event=nodered_not_started" in caplog.text and "cannot reach" in caplog.text
