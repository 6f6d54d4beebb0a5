"""Helpers for tests that run real processes: free ports, waiting on conditions, cleanup by pid."""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from services.common.config import Config

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A port no one listens on, below the kernel's ephemeral range: a port from bind(0) is one an
    outgoing connection (a client of the broker, say) may take before the service binds it."""
    low, _ = _ephemeral_range()
    first = max(1024, low - 12000)
    for _ in range(1000):
        port = random.randrange(first, low)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {first}-{low - 1}")


class ProcessExited(AssertionError):
    """A process a test waits on died first: waiting longer cannot help."""


def wait_until(
    condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll until condition() is truthy; fail with `what` after the deadline. Not a sleep: returns at once."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except ProcessExited:
            raise
        except Exception as exc:  # the condition may fail until the thing is up
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}: {last_exc!r}")


def _tail(log: Path, lines: int = 20) -> str:
    return "\n".join((log.read_text(errors="replace") if log.exists() else "").splitlines()[-lines:])


def wait_ready(proc: subprocess.Popen, log: Path, ready: Callable[[str], bool], timeout: float,
               what: str) -> None:
    """Wait until ready(the log's text); fail at once, with the log's end, if the process exits
    (also one that logged ready and died: it is not ready)."""
    def check() -> bool:
        if proc.poll() is not None:
            raise ProcessExited(f"{what}: exited with {proc.returncode}; its log ends:\n{_tail(log)}")
        return ready(log.read_text(errors="replace") if log.exists() else "")

    try:
        wait_until(check, timeout, what=what)
    except ProcessExited:
        raise
    except AssertionError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                             f"its log ends:\n{_tail(log)}") from None


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Processes:
    """Start processes and always stop them (by pid) at the end of a test."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                cwd=ROOT, start_new_session=True,
            )
        self.started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            self.stop(proc)


def free_config(home: Path, **settings: Any) -> Config:
    """A state directory at home with every port free, like a second stack on this machine."""
    return Config(home=home, proxy_port=free_port(), admin_port=free_port(), mqtt_port=free_port(),
                  nodered_port=free_port(), **settings)
