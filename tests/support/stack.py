"""Drive a whole stack the way a user does: `medsec up --detach`, the HTTP API, a TCP device."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

from services.common.adminclient import AdminClient
from services.common.config import Config
from services.common.state import admin_token

MEDSEC = [sys.executable, "-m", "services.cli.main"]


def medsec(env: dict[str, str], *args: str, timeout: float = 90, check: bool = True) -> CompletedProcess:
    result = subprocess.run(
        MEDSEC + list(args), env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        output = f"{result.stdout}\n{result.stderr}"
        raise AssertionError(f"medsec {' '.join(args)} failed ({result.returncode}):\n{output}")
    return result


def supervised_pids(config: Config) -> list[int]:
    """supervisord and every process it started (read from the pid file and /proc)."""
    pid_file = config.run_dir / "supervisord.pid"
    if not pid_file.exists():
        return []
    root = int(pid_file.read_text())
    pids, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        if Path(f"/proc/{pid}").exists():
            pids.append(pid)
            children = Path(f"/proc/{pid}/task/{pid}/children")
            if children.exists():
                frontier += [int(c) for c in children.read_text().split()]
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def api(config: Config, method: str, path: str, body: Any = None, raw: bytes | None = None,
        token: str | None = None) -> tuple[int, Any]:
    """(status, answer) from the stack's key-admin API (the project's client, the admin token)."""
    client = AdminClient(config.admin_url, admin_token(config), timeout=10)
    return client.request(method, path, body, raw=raw, token=token)


def device_socket(config: Config) -> socket.socket:
    return socket.create_connection((config.host, config.proxy_port), timeout=5)
