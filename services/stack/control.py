"""Start, stop and inspect a stack's supervisord (one per MEDSEC_HOME)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport

from services.broker.mosquitto import write_broker_files
from services.common.config import Config
from services.common.state import init_state
from services.stack.programs import programs, supervisord_conf


class StackError(Exception):
    pass


@dataclass(frozen=True)
class ProcessInfo:
    name: str
    state: str
    pid: int
    uptime: float


def supervisor_socket(config: Config) -> Path:
    return config.run_dir / "supervisord.sock"


def rpc(config: Config) -> xmlrpc.client.ServerProxy:
    transport = SupervisorTransport(None, None, f"unix://{supervisor_socket(config)}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def is_running(config: Config) -> bool:
    sock = supervisor_socket(config)
    if not sock.exists():
        return False
    try:
        return rpc(config).supervisor.getState()["statename"] == "RUNNING"
    except (OSError, xmlrpc.client.Error):
        return False


def prepare(config: Config, demo: int, nodered: bool, daemon: bool) -> Path:
    """Write every generated file; returns the supervisord config path."""
    init_state(config)
    broker_conf = write_broker_files(config)
    conf = config.run_dir / "supervisord.conf"
    conf.write_text(supervisord_conf(config, programs(config, broker_conf, demo, nodered), daemon))
    os.chmod(conf, 0o600)
    return conf


def start_supervisord(conf: Path, daemon: bool) -> subprocess.Popen:
    argv = [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)]
    if daemon:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            first = (result.stderr or result.stdout).strip().splitlines()[:1]
            raise StackError(f"supervisord did not start: {first[0] if first else result.returncode}")
        return None  # type: ignore[return-value]
    return subprocess.Popen(argv, start_new_session=True)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def readiness(config: Config) -> dict[str, bool]:
    return {
        "broker": _port_open(config.host, config.mqtt_port),
        "auth": config.auth_socket.exists(),
        "keyadmin": _port_open(config.host, config.admin_port),
        "proxy": _port_open(config.host, config.proxy_port),
    }


def wait_ready(config: Config, timeout: float = 30.0, nodered: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = readiness(config)
        if nodered:
            ready["nodered"] = _port_open(config.host, config.nodered_port)
        if all(ready.values()):
            return
        time.sleep(0.1)
    missing = [name for name, ok in ready.items() if not ok]
    raise StackError(f"not ready after {timeout:.0f}s: {', '.join(missing)} (see `medsec logs`)")


def processes(config: Config) -> list[ProcessInfo]:
    now = time.time()
    return [
        ProcessInfo(p["name"], p["statename"], p["pid"], (now - p["start"]) if p["pid"] else 0.0)
        for p in rpc(config).supervisor.getAllProcessInfo()
    ]


def start_program(config: Config, name: str) -> None:
    rpc(config).supervisor.startProcess(name, False)


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (our own child awaiting wait())."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop(config: Config, timeout: float = 30.0) -> bool:
    """Shut supervisord (and so every service) down; True if one was running."""
    pid_file = config.run_dir / "supervisord.pid"
    if not is_running(config):
        return False
    pid = int(pid_file.read_text()) if pid_file.exists() else None
    try:
        rpc(config).supervisor.shutdown()
    except (OSError, xmlrpc.client.Error):
        if pid:
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid and time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    if pid:
        raise StackError(f"supervisord (pid {pid}) did not stop within {timeout:.0f}s")
    return True
