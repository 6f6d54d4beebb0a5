#!/usr/bin/env python3
"""Container entrypoint of the Python services: state dir from compose secrets, then exec the service.

Compose mounts each secret as a file under /run/secrets/. The services read the
state directory layout of docs/architecture.md, so this copies the secrets the
container was given (and only those) into $MEDSEC_HOME/secrets/ with mode 0600,
as the container's own user, and execs `python -m <module of MEDSEC_SERVICE>`.
`broker` (the single-host variant, compose.single.yaml) runs Mosquitto with the
project's generated dynamic-security config instead.
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path

RUN_SECRETS = Path(os.environ.get("MEDSEC_SECRETS_DIR", "/run/secrets"))
# The one place that names each service's module.
MODULES = {
    "auth": "services.auth",
    "keyadmin": "services.keyadmin",
    "proxy": "services.proxy",
    "publisher": "services.publisher",
    "dispatch": "services.dispatch",
    "history": "services.history",
}
# /run/secrets/<name> -> $MEDSEC_HOME/secrets/<file>
FILES = {"master_key": "master.key", "admin_token_sha256": "admin.token.sha256",
         "admin_token": "admin.token", "emqx_api_key": "emqx-api-key",
         "nodered_read_token_sha256": "nodered-read.token.sha256",
         "nodered_manage_token_sha256": "nodered-manage.token.sha256",
         "dispatch_token_sha256": "dispatch.token.sha256", "dispatch_token": "dispatch.token",
         "postgres_password": "postgres.password", "history_db_password": "history-db.password",
         "tls_server_key": "tls-server.key", "tls_server_cert": "tls-server.pem"}
# Mosquitto's TLS listener (single host): other machines use this port, with the same logins.
TLS_PORT = 8883


def private(path: Path, data: bytes) -> None:
    # A name of our own: containers sharing a volume (auth, keyadmin) start at the same time.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def prepare(home: Path) -> None:
    secrets_dir = home / "secrets"
    # broker/: keyadmin regenerates the dynamic-security file there when it adds a station login.
    for d in (home, secrets_dir, home / "run", home / "logs", home / "broker"):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o700)
    # auth and keyadmin share one volume as their state dir and start together: merge under a
    # lock, never drop the other's password (nor a station's, which keyadmin adds at run time).
    pw_path = secrets_dir / "mqtt-passwords.json"
    lock = os.open(secrets_dir / ".entrypoint.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            passwords = dict(json.loads(pw_path.read_text())) if pw_path.exists() else {}
        except ValueError:
            passwords = {}
        if RUN_SECRETS.is_dir():
            for src in sorted(RUN_SECRETS.iterdir()):
                if src.name in FILES:
                    private(secrets_dir / FILES[src.name], src.read_bytes())
                elif src.name.startswith("mqtt_"):
                    passwords[src.name[5:]] = src.read_text().strip()
        private(pw_path, json.dumps(passwords).encode())
    finally:
        os.close(lock)
    # libpq reads the databases' passwords from here (the URLs carry none): the key store's
    # (database and role medsec) and the reading history's (history), each only if given.
    lines = [f"*:*:{db}:{db}:{(secrets_dir / name).read_text().strip()}\n"
             for db, name in (("medsec", "postgres.password"), ("history", "history-db.password"))
             if (secrets_dir / name).exists()]
    if lines:
        private(secrets_dir / "pgpass", "".join(lines).encode())
        os.environ["PGPASSFILE"] = str(secrets_dir / "pgpass")


def merged_dynsec(fresh: dict, old: dict | None, prefix: str) -> dict:
    """The generated accounts, plus the station logins keyadmin added to the running broker
    (the plugin saved them in its file; they have no generated password to rebuild them from)."""
    if not old:
        return fresh
    names = {c["username"] for c in fresh["clients"]}
    keep = [c for c in old.get("clients", []) if c.get("username", "").startswith(prefix)
            and c["username"] not in names]
    kept = {c["username"] for c in keep}
    roles = [r for r in old.get("roles", []) if r.get("rolename") in kept]
    return {**fresh, "clients": fresh["clients"] + keep, "roles": fresh["roles"] + roles}


def broker_argv(home: Path) -> list[str]:
    """Mosquitto's config (plain 1883 and TLS 8883, dynamic security) in the state volume."""
    from services.broker import dynsec, mosquitto
    from services.common.accounts import STATION_PREFIX
    from services.common.config import Config
    from services.common.state import load_passwords, write_secret

    config = Config.from_env()
    path = mosquitto.dynsec_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        old = json.loads(path.read_text()) if path.exists() else None
    except ValueError:
        old = None
    fresh = dynsec.config(mosquitto.broker_logins(load_passwords(config)))
    write_secret(path, json.dumps(merged_dynsec(fresh, old, STATION_PREFIX), indent=1).encode())
    data_dir = config.broker_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = mosquitto.mosquitto_conf(config, mosquitto.dynsec_plugin(config), path, data_dir)
    secrets_dir = home / "secrets"
    if (secrets_dir / "tls-server.pem").exists():
        conf += "\n".join([f"listener {TLS_PORT} {config.host}",
                           f"certfile {secrets_dir / 'tls-server.pem'}",
                           f"keyfile {secrets_dir / 'tls-server.key'}", ""])
    conf_path = config.broker_dir / "mosquitto.conf"
    write_secret(conf_path, conf.encode())
    return ["mosquitto", "-c", str(conf_path)]


def main(argv: list[str]) -> int:
    service = argv[1] if len(argv) > 1 else os.environ.get("MEDSEC_SERVICE", "")
    if service == "healthcheck":
        os.execvp("medsec", ["medsec", "healthcheck", *argv[2:]])
    if service not in MODULES and service != "broker":
        print(f"medsec-entrypoint: unknown service {service!r}; one of {', '.join(MODULES)}, broker",
              file=sys.stderr)
        return 2
    home = Path(os.environ.get("MEDSEC_HOME", "/var/lib/medsec"))
    prepare(home)
    if service == "broker":
        cmd = broker_argv(home)
        os.execvp(cmd[0], cmd)
    os.execvp(sys.executable, [sys.executable, "-m", MODULES[service], *argv[2:]])
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
