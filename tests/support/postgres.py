"""A real PostgreSQL server for tests: Debian's initdb/pg_ctl, a temp dir, a free port, a password.

PostgreSQL refuses to run as root; as root the server runs as the `postgres`
system user (created by Debian's package) or `nobody`. Each test gets its own
schema (`schema_url`), so tests share one server yet never see each other's rows.
"""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tests.support.proc import free_port, port_open, wait_until


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


@dataclass
class PgServer:
    data: Path
    port: int
    user: str
    password: str
    bin: Path
    run_as: str | None

    def url(self, database: str = "postgres", schema: str | None = None) -> str:
        url = f"postgresql://{self.user}:{quote(self.password)}@127.0.0.1:{self.port}/{database}"
        return url + (f"?options=-csearch_path%3D{schema}" if schema else "")

    def schema_url(self) -> str:
        """A fresh schema on the server; the URL selects it."""
        import psycopg

        schema = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f"CREATE SCHEMA {schema}")
        return self.url(schema=schema)

    def _cmd(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", self.run_as, "--", *argv] if self.run_as else argv

    def stop(self) -> None:
        subprocess.run(self._cmd([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
                       capture_output=True, check=False, timeout=30)
        shutil.rmtree(self.data.parent, ignore_errors=True)


def start_postgres() -> PgServer:
    binary = pg_bin()
    if binary is None:
        raise RuntimeError("PostgreSQL is not installed (make setup-test installs Debian's postgresql)")
    run_as = None
    if os.geteuid() == 0:
        run_as = "postgres"
        try:
            pwd.getpwnam(run_as)
        except KeyError:
            run_as = "nobody"
    base = Path(tempfile.mkdtemp(prefix="medsec-pg-"))
    data = base / "data"
    pwfile = base / "pw"
    password = secrets.token_urlsafe(18)
    pwfile.write_text(password + "\n")
    if run_as:
        entry = pwd.getpwnam(run_as)
        os.chown(base, entry.pw_uid, entry.pw_gid)
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    os.chmod(pwfile, 0o600)
    server = PgServer(data, free_port(), "medsec", password, binary, run_as)
    subprocess.run(server._cmd([str(binary / "initdb"), "-D", str(data), "-U", "medsec",
                                "-A", "scram-sha-256", "--pwfile", str(pwfile), "-E", "UTF8", "--no-sync"]),
                   capture_output=True, check=True, timeout=120)
    pwfile.unlink()
    opts = (f"-c listen_addresses=127.0.0.1 -p {server.port} -c unix_socket_directories={base}"
            " -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=200")
    subprocess.run(server._cmd([str(binary / "pg_ctl"), "-D", str(data), "-o", opts, "-l",
                                str(base / "server.log"), "-w", "-t", "60", "start"]),
                   capture_output=True, check=True, timeout=90)
    wait_until(lambda: port_open(server.port), 30, what="postgres to listen")
    return server
