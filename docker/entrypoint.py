#!/usr/bin/env python3
"""Container entrypoint of the Python services: state dir from Docker secrets, then exec the service.

Docker mounts each secret as a file under /run/secrets/. The services read the
state directory layout of docs/architecture.md, so this copies the secrets the
container was given (and only those) into $MEDSEC_HOME/secrets/ with mode 0600,
as the container's own user, and execs `python -m services.<MEDSEC_SERVICE>`.
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path

RUN_SECRETS = Path(os.environ.get("MEDSEC_SECRETS_DIR", "/run/secrets"))
MODULES = {
    "auth": "services.auth",
    "keyadmin": "services.keyadmin",
    "proxy": "services.proxy",
    "publisher": "services.publisher",
    "dispatch": "services.dispatch",
}
# /run/secrets/<name> -> $MEDSEC_HOME/secrets/<file>
FILES = {"master_key": "master.key", "admin_token_sha256": "admin.token.sha256",
         "emqx_api_key": "emqx-api-key"}


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
    for d in (home, secrets_dir, home / "run", home / "logs"):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o700)
    # auth and keyadmin share one volume as their state dir and start together: merge under a
    # lock, never drop the other's password.
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


def main(argv: list[str]) -> int:
    service = argv[1] if len(argv) > 1 else os.environ.get("MEDSEC_SERVICE", "")
    if service == "healthcheck":
        os.execvp("medsec", ["medsec", "healthcheck", *argv[2:]])
    if service not in MODULES:
        print(f"medsec-entrypoint: unknown service {service!r}; one of {', '.join(MODULES)}", file=sys.stderr)
        return 2
    prepare(Path(os.environ.get("MEDSEC_HOME", "/var/lib/medsec")))
    os.execvp(sys.executable, [sys.executable, "-m", MODULES[service], *argv[2:]])
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
