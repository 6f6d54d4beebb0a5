"""compose.yaml validates with the generated deploy dir, publishes only the allowed ports, holds no
default credential; compose-init is idempotent and its outputs are usable (real openssl, real files)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from services.broker import emqx
from services.broker.emqx_admin import api_key_path
from services.cli.cmd_compose import init_deploy
from services.common.accounts import ACCOUNTS
from services.common.config import Config
from services.common.state import hash_token
from tests.support.proc import ROOT

COMPOSE = ROOT / "compose.yaml"
ALLOWED_PORTS = {9998, 1883, 8883, 1880, 8080}
# Values that must never appear as a credential (EMQX's, Node-RED's and common defaults).
DEFAULT_CREDENTIALS = {"public", "admin", "password", "changeme", "secret", "emqx", "root", "test",
                       "guest", "medsec", "default", "123456", "nodered", "node-red", "emqxsecretcookie"}
SECRETISH = ("PASSWORD", "COOKIE", "SECRET", "TOKEN", "KEY")

pytestmark = pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")


@pytest.fixture(scope="module")
def deploy(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("deploy") / "deploy"
    init_deploy(d)
    return d


def compose_config(compose_file: Path, deploy: Path, **env: str) -> dict:
    """`docker-compose -f FILE config` with this deploy dir, as the data it prints."""
    full = {**os.environ, "MEDSEC_DEPLOY": str(deploy), **env}
    result = subprocess.run(["docker-compose", "-f", str(compose_file), "config"], env=full, cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    # docker-compose is a Debian Python program that brings PyYAML to the system Python.
    loader = subprocess.run(["/usr/bin/python3", "-c",
                             "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"],
                            input=result.stdout, capture_output=True, text=True, check=True)
    return json.loads(loader.stdout)


@pytest.fixture(scope="module")
def rendered(deploy) -> dict:
    return compose_config(COMPOSE, deploy)


def test_compose_validates_with_every_service(rendered):
    assert {"emqx1", "emqx2", "lb", "auth", "keyadmin", "proxy", "publisher", "publisher2", "dispatch",
            "nodered"} <= set(rendered["services"])
    ids = {rendered["services"][p]["environment"]["MEDSEC_PUBLISHER_ID"] for p in ("publisher", "publisher2")}
    assert len(ids) == 2, "each publisher keeps its own session id"


def test_compose_fails_without_the_generated_files(tmp_path):
    """Every secret is a generated file: a missing deploy dir is an error, not a default."""
    env = {**os.environ, "MEDSEC_DEPLOY": str(tmp_path / "nothing")}
    result = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "emqx.env" in result.stderr or "nothing" in result.stderr


def _port(entry) -> tuple[str, int]:
    """(host ip, published port) from either of docker-compose's two port notations."""
    if isinstance(entry, dict):
        return entry.get("host_ip", ""), int(entry["published"])
    parts = entry.split("/")[0].split(":")
    return (parts[0] if len(parts) == 3 else ""), int(parts[-2] if len(parts) > 1 else parts[-1])


def _mount_target(entry) -> str:
    return entry["target"] if isinstance(entry, dict) else entry.split(":")[1]


def test_only_allowed_ports_are_published(rendered):
    published = {}
    for name, svc in rendered["services"].items():
        for port in svc.get("ports", []):
            published.setdefault(name, set()).add(_port(port)[1])
    assert set().union(*published.values()) <= ALLOWED_PORTS, published
    assert published["lb"] == {9998, 1883, 8883}
    # The admin API listens on the host's loopback only.
    assert _port(rendered["services"]["keyadmin"]["ports"][0])[0] == "127.0.0.1"
    for name in ("emqx1", "emqx2", "auth", "proxy", "publisher", "publisher2", "dispatch"):
        assert name not in published, f"{name} must stay internal"


def test_python_services_are_non_root_read_only_with_healthchecks(rendered):
    dockerfile = (ROOT / "docker" / "python.Dockerfile").read_text()
    assert "USER 10001" in dockerfile and "HEALTHCHECK" in dockerfile
    for name in ("auth", "keyadmin", "proxy", "publisher", "dispatch"):
        svc = rendered["services"][name]
        assert svc["read_only"] is True, name
        assert svc["environment"]["MEDSEC_SERVICE"] == name
        assert "ALL" in svc["cap_drop"]
    assert rendered["networks"]["bus"].get("internal") is True


def test_emqx_cluster_is_static_with_files_and_no_default_dashboard_password(rendered, deploy):
    seeds = set()
    for name in ("emqx1", "emqx2"):
        env = rendered["services"][name]["environment"]
        assert env["EMQX_CLUSTER__DISCOVERY_STRATEGY"] == "static"
        seeds.add(env["EMQX_CLUSTER__STATIC__SEEDS"])
        assert env["EMQX_DASHBOARD__DEFAULT_PASSWORD"] not in DEFAULT_CREDENTIALS
        assert len(env["EMQX_NODE__COOKIE"]) >= 32
        mounts = {_mount_target(v) for v in rendered["services"][name]["volumes"]}
        assert {"/opt/emqx/etc/emqx.conf", emqx.ETC, f"{emqx.CERTS}/server.key"} <= mounts
    assert len(seeds) == 1
    assert (deploy / "emqx" / emqx.ACL_NAME).read_text().rstrip().endswith("{deny, all}.")


def test_keyadmin_adds_station_logins_to_emqx_with_the_generated_api_key(rendered, deploy):
    keyadmin = rendered["services"]["keyadmin"]
    assert keyadmin["environment"]["MEDSEC_EMQX_API"] == "http://emqx:18083"
    assert "emqx_api_key" in {s["source"] if isinstance(s, dict) else s for s in keyadmin["secrets"]}
    key = (deploy / "secrets" / "emqx_api_key").read_text().strip()
    # EMQX's bootstrap format: one "key:secret" line, key [A-Za-z0-9_-]+, secret 3-128 characters.
    assert re.fullmatch(r"[A-Za-z0-9_-]+:[A-Za-z0-9_-]{32,128}", key)
    for name in ("emqx1", "emqx2"):
        mounts = {_mount_target(v) for v in rendered["services"][name]["volumes"]}
        assert emqx.API_KEY_FILE in mounts
    assert f'bootstrap_file = "{emqx.API_KEY_FILE}"' in (deploy / "emqx" / emqx.CONF_NAME).read_text()
    # The API port stays on the internal network.
    assert all("18083" not in str(p) for s in rendered["services"].values() for p in s.get("ports", []))


def _values(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _values(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _values(v, f"{path}[{i}]")
    else:
        yield path, node


def test_no_default_or_empty_credential_anywhere(rendered, deploy):
    text = COMPOSE.read_text()
    for word in DEFAULT_CREDENTIALS - {"emqx", "medsec"}:  # image and project names are fine
        assert f"PASSWORD: {word}" not in text and f"password={word}" not in text.lower()
    for path, value in _values(rendered):
        key = path.rsplit(".", 1)[-1].upper()
        if any(s in key for s in SECRETISH) and not key.endswith("_FILE"):
            assert isinstance(value, str) and value.strip(), f"{path} is empty"
            assert value.lower() not in DEFAULT_CREDENTIALS, f"{path} is a default credential"
            assert len(value) >= 24, f"{path} is too short to be generated"
    generated = [p for p in (deploy / "secrets").iterdir()]
    assert len(generated) >= len(ACCOUNTS) + 5
    for p in generated:
        data = p.read_bytes().strip()
        assert data, f"{p.name} is empty"
        for line in data.splitlines():
            value = line.split(b"=", 1)[-1].decode(errors="replace")
            assert value.lower() not in DEFAULT_CREDENTIALS, p.name
    # The deploy dir keeps itself out of git (a secret must never be committed by `git add -A`).
    assert (deploy / ".gitignore").read_text().strip() == "*"


def test_compose_init_is_idempotent_and_keeps_secrets(tmp_path):
    d = tmp_path / "deploy"
    first = init_deploy(d)
    before = {p.name: p.read_bytes() for p in (d / "secrets").iterdir()}
    bootstrap = (d / "emqx" / emqx.BOOTSTRAP_NAME).read_text()
    cert = (d / "tls" / "server.pem").read_bytes()
    second = init_deploy(d)
    assert {p.name: p.read_bytes() for p in (d / "secrets").iterdir()} == before
    assert (d / "emqx" / emqx.BOOTSTRAP_NAME).read_text() == bootstrap
    assert (d / "tls" / "server.pem").read_bytes() == cert
    assert first.created and not second.created
    # A lost password is regenerated alone, and the bootstrap follows it.
    (d / "secrets" / "mqtt_proxy").unlink()
    third = init_deploy(d)
    assert "mqtt_proxy" in third.created and "auth-bootstrap.csv" in third.created
    assert (d / "secrets" / "master.key").read_bytes() == before["master.key"]


def test_compose_init_outputs_fit_together(deploy):
    sec = deploy / "secrets"
    assert os.stat(deploy).st_mode & 0o777 == 0o700
    assert os.stat(sec).st_mode & 0o777 == 0o700
    assert os.stat(deploy / "tls" / "ca.key").st_mode & 0o777 == 0o600
    assert len((sec / "master.key").read_bytes()) == 32
    token = (sec / "admin.token").read_text().strip()
    assert (sec / "admin.token.sha256").read_text().strip() == hash_token(token)
    rows = {line.split(",")[0]: line.split(",") for line in
            (deploy / "emqx" / emqx.BOOTSTRAP_NAME).read_text().splitlines()[1:]}
    assert set(rows) == set(ACCOUNTS) - {"brokeradmin"}, "Mosquitto's plugin admin has no use on EMQX"
    for account, (_, digest, salt, _su) in rows.items():
        password = (sec / f"mqtt_{account}").read_text()
        assert emqx.password_hash(password, salt)[0] == digest
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(deploy / "tls" / "ca.pem"),
                             str(deploy / "tls" / "server.pem")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    names = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                            str(deploy / "tls" / "server.pem")], capture_output=True, text=True).stdout
    assert "DNS:localhost" in names and "DNS:emqx1.medsec" in names


def test_entrypoint_builds_the_state_dir_from_docker_secrets(tmp_path, deploy):
    run_secrets = tmp_path / "run-secrets"
    run_secrets.mkdir()
    for src, name in (("master.key", "master_key"), ("mqtt_keyadmin", "mqtt_keyadmin"),
                      ("emqx_api_key", "emqx_api_key")):
        shutil.copy(deploy / "secrets" / src, run_secrets / name)
    home = tmp_path / "home"
    entry = str(ROOT / "docker" / "entrypoint.py")
    code = f"import runpy, pathlib; runpy.run_path({entry!r})['prepare'](pathlib.Path({str(home)!r}))"
    env = {**os.environ, "MEDSEC_SECRETS_DIR": str(run_secrets)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    (home / "secrets" / "mqtt-passwords.json").chmod(0o600)
    passwords = json.loads((home / "secrets" / "mqtt-passwords.json").read_text())
    assert passwords == {"keyadmin": (deploy / "secrets" / "mqtt_keyadmin").read_text()}
    assert (home / "secrets" / "master.key").read_bytes() == (deploy / "secrets" / "master.key").read_bytes()
    assert api_key_path(Config(home=home)).read_bytes() == (deploy / "secrets" / "emqx_api_key").read_bytes()
    for p in (home / "secrets").iterdir():
        assert p.stat().st_mode & 0o777 == 0o600
    # A second container on the same volume (auth: no MQTT account) keeps keyadmin's password.
    (run_secrets / "mqtt_keyadmin").unlink()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    assert json.loads((home / "secrets" / "mqtt-passwords.json").read_text()) == passwords


def _medsec(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli.main", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={**os.environ, **(env or {})}, check=False)


def test_compose_init_command_and_its_errors(tmp_path):
    d = tmp_path / "deploy"
    first = _medsec("compose-init", "--dir", str(d), "--hostname", "gw.example.org")
    assert first.returncode == 0, first.stderr
    assert "created:" in first.stdout and str(d) in first.stdout
    token = (d / "secrets" / "admin.token").read_text().strip()
    assert token not in first.stdout + first.stderr, "secrets are never printed"
    names = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                            str(d / "tls" / "server.pem")], capture_output=True, text=True).stdout
    assert "DNS:gw.example.org" in names
    again = _medsec("compose-init", env={"MEDSEC_DEPLOY": str(d)})
    assert again.returncode == 0 and "created:" not in again.stdout and "kept:" in again.stdout
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    bad = _medsec("compose-init", "--dir", str(blocked / "deploy"))
    assert bad.returncode == 1 and bad.stderr.startswith("medsec: cannot write")
    assert "Traceback" not in bad.stderr
