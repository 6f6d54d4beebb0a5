"""Fixtures of the dispatch tests.

Test keys come from the envelope vectors (3072-bit RSA without paying for
generation); `dstack` is a real Mosquitto, the stations API and, on demand,
the dispatch service, on a fresh state dir.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from Crypto.PublicKey import RSA

from services.common import envelope
from services.common.config import Config
from services.common.state import write_secret
from services.dispatch import keys as dkeys
from tests.support.broker import Subscriber, broker_under
from tests.support.proc import port_open, wait_until
from tests.support.stack import api

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "envelope.json"


@pytest.fixture(scope="session")
def vectors() -> dict:
    return json.loads(VECTORS.read_text())


@pytest.fixture(scope="session")
def keys(vectors) -> dict[str, RSA.RsaKey]:
    return {name: RSA.import_key(pem) for name, pem in vectors["keys"].items()}

STATIONS = ("s1", "s2", "s3")


def demo_files(stations=STATIONS, fail_first=("s2",)) -> dict[str, dict]:
    """Param files: the demo operation gives setpoint x gain; the rule wants 95..105."""
    files = {}
    for s in stations:
        sets = [{"setpoint": 100, "gain": 1.0}]
        if s in fail_first:
            sets.insert(0, {"setpoint": 100, "gain": 1.3})
        files[s] = {"station": s, "value_sets": sets, "accept": {"field": "result", "min": 95, "max": 105},
                    "recipe": f"recipe-{s}"}
    return files


@dataclass
class DispatchStack:
    config: Config
    env: dict
    procs: object
    keys: dict
    passwords: dict = field(default_factory=dict)
    dispatch: object = None

    @property
    def params_dir(self) -> Path:
        return dkeys.dispatch_dir(self.config) / "params"

    @property
    def state_path(self) -> Path:
        return dkeys.dispatch_dir(self.config) / "state.json"

    def write_line(self, run: str, files: dict[str, dict]) -> None:
        self.params_dir.mkdir(parents=True, exist_ok=True)
        for station, doc in files.items():
            (self.params_dir / f"{station}.json").write_text(json.dumps(doc))
        (self.params_dir / "line.json").write_text(json.dumps({"run": run, "stations": list(files)}))

    def register(self, station: str, key_name: str | None = None) -> str:
        status, body = api(self.config, "POST", "/stations",
                           {"id": station, "public_key": envelope.public_pem(self.keys[key_name or station])})
        assert status == 201, body
        self.passwords[station] = body["mqtt_password"]
        return body["mqtt_password"]

    def start_dispatch(self):
        argv = [sys.executable, "-m", "services.dispatch"]
        self.dispatch = self.procs.start("dispatch", argv, env=self.env)
        return self.dispatch

    def status(self, monitor: Subscriber) -> dict:
        got = monitor.on("medsec/dispatch/status")
        return json.loads(got[-1]) if got else {}

    def rejected(self, reason: str) -> int:
        """Rejections for `reason` since the test began (`running` sets the baseline)."""
        now = self.status(self.monitor).get("rejected", {}).get(reason, 0)
        return now - getattr(self, "baseline", {}).get(reason, 0)


def _stack(config: Config, env: dict, procs, broker, keys) -> DispatchStack:
    # The server's key pair from the vectors: no 3072-bit generation in tests.
    dkeys.dispatch_dir(config).mkdir(parents=True, exist_ok=True)
    write_secret(dkeys.server_key_path(config), envelope.private_pem(keys["dispatch"]))
    procs.start("keyadmin", [sys.executable, "-m", "services.keyadmin"], env=env)
    wait_until(lambda: port_open(config.admin_port), 15, what="key-admin API")
    return DispatchStack(config, dict(env), procs, keys)


@pytest.fixture
def dstack(config, config_env, procs, broker, keys) -> DispatchStack:
    """A fresh stack per test: broker and key-admin running, dispatch started by the test."""
    return _stack(config, config_env, procs, broker, keys)


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory, keys):
    """One stack for a whole module (each costs seconds); tests isolate themselves with a new line run."""
    with broker_under(tmp_path_factory.mktemp("dispatch")) as (config, procs, broker):
        stack = _stack(config, config.to_env(), procs, broker, keys)
        monitor = Subscriber(config, "monitor")
        monitor.subscribe("medsec/dispatch/#")
        stack.monitor = monitor
        stack.start_dispatch()
        wait_until(lambda: stack.status(monitor), 15, what="dispatch status")
        yield stack
        monitor.close()


class Probe:
    """A hand-driven station: logs in as station-<id>, seals whatever a test wants, sees the answers."""

    def __init__(self, dstack: DispatchStack, station: str, password: str | None = None) -> None:
        self.dstack = dstack
        self.station = station
        self.server = dstack.keys["dispatch"].public_key()
        self.sub = Subscriber(dstack.config, f"station-{station}", password or dstack.passwords[station])
        for leaf in ("params", "verdict", "go"):
            self.sub.subscribe(f"medsec/dispatch/station-{station}/{leaf}")
        self.opener = envelope.Opener(station, dstack.keys[station],
                                      lambda s: self.server if s == "dispatch" else None)
        self.seen = 0

    def seal(self, kind: str, body: dict, *, signer: str | None = None, sender: str | None = None,
             recipient: str = "dispatch", now: float | None = None) -> bytes:
        recipient_key = self.server if recipient == "dispatch" else self.dstack.keys[recipient]
        return envelope.seal(json.dumps(body).encode(), kind=kind, sender=sender or self.station,
                             recipient=recipient, sender_key=self.dstack.keys[signer or self.station],
                             recipient_key=recipient_key, now=now)

    def publish(self, leaf: str, data: bytes, station: str | None = None) -> None:
        topic = f"medsec/dispatch/station-{station or self.station}/{leaf}"
        self.sub.client.publish(topic, data, qos=1).wait_for_publish(5)

    def send(self, leaf: str, kind: str, body: dict, **kw) -> bytes:
        data = self.seal(kind, body, **kw)
        self.publish(leaf, data)
        return data

    def answers(self) -> list[tuple[str, dict]]:
        out = []
        for m in list(self.sub.messages):
            env = envelope.parse(m.payload)
            out.append((env.kind, json.loads(envelope.decrypt(env, self.dstack.keys[self.station]))))
        return out

    def next(self, timeout: float = 10) -> tuple[str, dict]:
        """The next answer the server sealed for this station."""
        wait_until(lambda: len(self.sub.messages) > self.seen, timeout, what=f"an answer for {self.station}")
        self.seen += 1
        m = self.sub.messages[self.seen - 1]
        _, plain = self.opener.open(m.payload)
        return envelope.parse(m.payload).kind, json.loads(plain)

    def close(self) -> None:
        self.sub.close()


@pytest.fixture
def running(shared_stack, request):
    """A new line run s1, s2, s3 (s2 fails its first set), all registered; dispatch up; a monitor on the tree.

    `running.rejected(reason)` counts the rejections since this test started.
    """
    stack = shared_stack
    stack.write_line(request.node.name, demo_files())
    for s in STATIONS:
        status, doc = api(stack.config, "GET", f"/stations/{s}")
        if status != 200 or doc.get("revoked_at"):
            stack.register(s)
    stack.baseline = dict(stack.status(stack.monitor).get("rejected", {}))
    return stack
