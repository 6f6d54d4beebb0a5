"""The container path without a Docker engine: the image's entrypoint builds the state dir from
`/run/secrets`-style files and starts the real services; `medsec healthcheck` tells up from down;
both HAProxy configs (compose's and the generated one) pass `haproxy -c`."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli.cmd_compose import haproxy_config
from services.common.state import mqtt_password
from tests.support.proc import ROOT, free_port, wait_until

ENTRYPOINT = [sys.executable, str(ROOT / "docker" / "entrypoint.py")]
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def healthcheck(service: str, env: dict[str, str]) -> int:
    return subprocess.run([sys.executable, "-m", "services.cli.main", "healthcheck", service],
                          env=env, capture_output=True, timeout=30, check=False).returncode


@pytest.fixture
def container(tmp_path, config, broker):
    """What compose gives a Python service: secrets as files, a state dir of its own, env only."""
    secrets = tmp_path / "run-secrets"
    secrets.mkdir()
    shutil.copy(config.master_key_path, secrets / "master_key")
    shutil.copy(config.admin_token_hash_path, secrets / "admin_token_sha256")
    for account in ("proxy", "keyadmin"):
        (secrets / f"mqtt_{account}").write_text(mqtt_password(config, account))
    home = tmp_path / "container-home"
    env = {
        "MEDSEC_SECRETS_DIR": str(secrets),
        "MEDSEC_HOME": str(home),
        "MEDSEC_AUTH_SOCKET": str(tmp_path / "auth-socket" / "auth.sock"),
        "MEDSEC_MQTT_PORT": str(config.mqtt_port),
        "MEDSEC_PROXY_PORT": str(free_port()),
        "MEDSEC_ADMIN_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    (tmp_path / "auth-socket").mkdir()
    return env


def test_entrypoint_starts_services_that_pass_their_healthchecks(container, procs):
    env = container
    for service in ("auth", "proxy", "keyadmin"):
        assert healthcheck(service, env) == 1, f"{service} is not running yet"
    procs.start("auth", ENTRYPOINT + ["auth"], env={**env, "MEDSEC_SERVICE": "auth"})
    wait_until(lambda: healthcheck("auth", env) == 0, 20, what="auth healthy")
    procs.start("keyadmin", ENTRYPOINT + ["keyadmin"], env=env)
    procs.start("proxy", ENTRYPOINT + ["proxy"], env=env)
    wait_until(lambda: healthcheck("keyadmin", env) == 0, 20, what="keyadmin healthy")
    wait_until(lambda: healthcheck("proxy", env) == 0, 20, what="proxy healthy")
    home = Path(env["MEDSEC_HOME"])
    assert (home / "secrets" / "master.key").stat().st_mode & 0o777 == 0o600
    assert home.stat().st_mode & 0o777 == 0o700


def test_entrypoint_and_healthcheck_refuse_unknown_services(tmp_path):
    result = subprocess.run(ENTRYPOINT + ["nonsense"], capture_output=True, text=True, timeout=30,
                            env={"MEDSEC_HOME": str(tmp_path / "h"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and "unknown service" in result.stderr
    assert "Traceback" not in result.stderr
    assert healthcheck("nonsense", {"MEDSEC_HOME": str(tmp_path / "h"), "PATH": "/usr/bin:/bin"}) == 2


@pytest.mark.skipif(not Path(HAPROXY).exists(), reason="haproxy not installed")
def test_both_haproxy_configs_are_valid(tmp_path):
    shipped = subprocess.run([HAPROXY, "-c", "-f", str(ROOT / "docker" / "haproxy" / "haproxy.cfg")],
                             capture_output=True, text=True, timeout=30, check=False)
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    cfg = tmp_path / "local.cfg"
    cfg.write_text(haproxy_config("127.0.0.1:9998", ["127.0.0.1:10001", "127.0.0.1:10002"]))
    local = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30,
                           check=False)
    assert local.returncode == 0, local.stdout + local.stderr
    assert "server proxy2 127.0.0.1:10002 check" in cfg.read_text()


NODE = shutil.which("node")
NODE_MODULES = ROOT / "nodered" / "node_modules"


@pytest.mark.skipif(NODE is None, reason="node not installed")
def test_nodered_container_credentials(tmp_path):
    """The credentials file points the shipped gateway at environment references, not secrets.
    (The container's settings are the local stack's template: tests/nodered/test_runtime.py.)"""
    shutil.copy(ROOT / "nodered" / "flows.json", tmp_path / "flows.json")
    subprocess.run([NODE, str(ROOT / "docker" / "nodered-creds.js"), str(tmp_path)], check=True, timeout=30)
    creds = json.loads((tmp_path / "flows_cred.json").read_text())
    assert creds == {"medsec.gateway": {"password": "${MEDSEC_NR_MQTT_PASSWORD}",
                                        "token": "${MEDSEC_NR_READ_TOKEN}",
                                        "manageToken": "${MEDSEC_NR_MANAGE_TOKEN}"}}
    assert (tmp_path / "flows_cred.json").stat().st_mode & 0o777 == 0o600
