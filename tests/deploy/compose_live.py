"""Run compose.single.yaml for real on this machine kind: rootful Podman, Debian's docker-compose.

docker-compose (v1) talks to `podman system service` on a socket of our own; it is what waits on
`depends_on: condition: service_healthy`. Podman runs healthchecks from systemd timers, and
where there is no systemd (containers, CI) nothing runs them: HealthDriver runs them instead,
as `podman healthcheck run` (every second until healthy, then every 5 s). Images come from
scripts/build-images.sh, the same script as `make images` (local base made with debootstrap once,
Podman's layer cache).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from tests.support.proc import ROOT, free_port, wait_until

COMPOSE_FILE = ROOT / "compose.single.yaml"
CONTAINERS_CONF = ROOT / "scripts" / "containers.conf"
SERVICES = ("postgres", "broker", "auth", "keyadmin", "proxy1", "proxy2", "publisher", "history", "dispatch",
            "lb", "nodered")


def podman_usable() -> str | None:
    """None when rootful Podman and docker-compose can run containers here, else why not."""
    if os.geteuid() != 0:
        return "the compose tests need rootful Podman (run make test as root)"
    for tool in ("podman", "docker-compose", "debootstrap", "runc"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (scripts/install-system-packages.sh test installs it)"
    return None


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}


def podman(*args: str, timeout: float = 60, check: bool = True,
           stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=podman_env(), capture_output=True, text=True,
                          timeout=timeout, check=check, input=stdin)


def build_images(log: Path) -> float:
    """scripts/build-images.sh (what `make images` runs); returns its duration in seconds."""
    started = time.monotonic()
    with open(log, "ab") as out:
        subprocess.run([str(ROOT / "scripts" / "build-images.sh")], cwd=ROOT, env=podman_env(),
                       stdout=out, stderr=subprocess.STDOUT, timeout=1800, check=True)
    return time.monotonic() - started


class HealthDriver:
    """Runs the healthchecks of a project's containers (Podman without systemd): every `interval` s
    while a container is starting or unhealthy, every `healthy_interval` s (the compose files'
    5 s) once healthy. Checking healthy ones every second too started ~11 processes a second,
    a Python interpreter in most: on 2 cores that left the services themselves short of CPU."""

    def __init__(self, project: str, interval: float = 1.0, healthy_interval: float = 5.0) -> None:
        self.project = project
        self.interval = interval
        self.healthy_interval = healthy_interval
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="health-driver", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        # One thread per container: a slow check (a loaded machine) does not hold up the others.
        running: dict[str, threading.Thread] = {}
        checked: dict[str, float] = {}
        while not self.stopping.wait(self.interval):
            try:
                rows = podman("ps", "--filter", f"label=com.docker.compose.project={self.project}",
                              "--format", "{{.Names}}\t{{.Status}}", timeout=20, check=False).stdout
            except subprocess.TimeoutExpired:
                continue
            now = time.monotonic()
            for row in rows.splitlines():
                name, _, status = row.partition("\t")
                if "(healthy)" in status and now - checked.get(name, 0.0) < self.healthy_interval:
                    continue
                if name not in running or not running[name].is_alive():
                    checked[name] = now
                    running[name] = threading.Thread(target=self._check, args=(name,), daemon=True)
                    running[name].start()

    @staticmethod
    def _check(name: str) -> None:
        try:
            podman("healthcheck", "run", name, timeout=30, check=False)
        except subprocess.TimeoutExpired:
            pass

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(30)


class ComposeProject:
    """One compose.single.yaml project with its own ports, deploy dir and Podman API socket."""

    def __init__(self, workdir: Path, deploy: Path) -> None:
        self.name = f"medsectest{os.getpid()}"
        self.workdir = workdir
        self.deploy = deploy
        self.ports = {k: free_port() for k in ("proxy", "mqtt", "mqtts", "admin", "nodered")}
        self.socket = workdir / "podman.sock"
        self.service_proc: subprocess.Popen | None = None
        self.health = HealthDriver(self.name)

    @property
    def env(self) -> dict[str, str]:
        return {**podman_env(), "DOCKER_HOST": f"unix://{self.socket}", "COMPOSE_PROJECT_NAME": self.name,
                "MEDSEC_DEPLOY": str(self.deploy), "MEDSEC_PROXY_PORT": str(self.ports["proxy"]),
                "MEDSEC_MQTT_PORT": str(self.ports["mqtt"]), "MEDSEC_MQTTS_PORT": str(self.ports["mqtts"]),
                "MEDSEC_ADMIN_PORT": str(self.ports["admin"]),
                "MEDSEC_NODERED_PORT": str(self.ports["nodered"]),
                "COMPOSE_HTTP_TIMEOUT": "300",
                # Every simulated device reaches HAProxy from this host's one address: the proxies'
                # per-address throttle would take a few refused old credentials for an attack.
                "MEDSEC_THROTTLE_FAILURES": "0"}

    def start_api(self) -> None:
        log = open(self.workdir / "podman-service.log", "ab")  # noqa: SIM115 (open for the process' life)
        self.service_proc = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{self.socket}"], env=podman_env(),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self.socket.exists, 30, what="podman system service socket")
        self.health.start()

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), *args], cwd=ROOT, env=self.env,
                                capture_output=True, text=True, timeout=timeout, check=False)
        with open(self.workdir / "compose.log", "a") as log:
            log.write(f"$ docker-compose {' '.join(args)}\n{result.stdout}{result.stderr}\n")
        if check and result.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed: {result.stderr[-2000:]}")
        return result

    def container(self, service: str) -> str:
        return f"{self.name}_{service}_1"

    def states(self) -> dict[str, str]:
        """service -> health ('healthy', 'starting', 'unhealthy') or the container state when not running."""
        out = podman("ps", "-a", "--filter", f"label=com.docker.compose.project={self.name}",
                     "--format", "json", check=False).stdout
        states = {}
        for c in json.loads(out or "[]"):
            service = c.get("Labels", {}).get("com.docker.compose.service", "")
            status = c.get("Status", "") or ""
            state = c.get("State", "")
            if state != "running":
                states[service] = state
            elif "(healthy)" in status:
                states[service] = "healthy"
            elif "(unhealthy)" in status:
                states[service] = "unhealthy"
            else:
                inspect = podman("inspect", "--format", "{{.State.Health.Status}}", c["Id"], check=False)
                states[service] = inspect.stdout.strip() or "running"
        return states

    def all_healthy(self) -> bool:
        states = self.states()
        return all(states.get(s) == "healthy" for s in SERVICES)

    def wait_healthy(self, timeout: float = 120, services: tuple[str, ...] = SERVICES) -> float:
        started = time.monotonic()
        wait_until(lambda: all(self.states().get(s) == "healthy" for s in services), timeout, interval=0.5,
                   what=f"{', '.join(services)} healthy (now {self.states()})")
        return time.monotonic() - started

    def exec(self, service: str, *argv: str, env: dict[str, str] | None = None,
             timeout: float = 120, stdin: str | None = None) -> subprocess.CompletedProcess:
        flags = [f"--env={k}={v}" for k, v in (env or {}).items()] + (["-i"] if stdin is not None else [])
        return podman("exec", *flags, self.container(service), *argv, timeout=timeout, check=False,
                      stdin=stdin)

    def stop(self, service: str) -> tuple[float, int]:
        """`podman stop` with the compose file's 2 s grace: (seconds it took, the exit code; 137
        means the service ignored SIGTERM until it was killed at the deadline)."""
        started = time.monotonic()
        podman("stop", "-t", "2", self.container(service), timeout=30)
        took = time.monotonic() - started
        code = podman("inspect", "--format", "{{.State.ExitCode}}", self.container(service), check=False)
        return took, int(code.stdout.strip() or -1)

    def logs(self, service: str) -> str:
        result = podman("logs", self.container(service), check=False)
        return result.stdout + result.stderr

    def save_logs(self, stage: str) -> None:
        """Every service's log into the work dir (containers and their logs go with `down`)."""
        for service in SERVICES:
            (self.workdir / f"{stage}-{service}.log").write_text(self.logs(service))

    def close(self, remove_volumes: bool = True) -> None:
        try:
            self.compose("down", "-t", "2", *(["-v"] if remove_volumes else []), timeout=180, check=False)
        finally:
            self.health.stop()
            if self.service_proc and self.service_proc.poll() is None:
                self.service_proc.terminate()
                try:
                    self.service_proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.service_proc.kill()
                    self.service_proc.wait(5)
