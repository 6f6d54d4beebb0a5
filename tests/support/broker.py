"""A real Mosquitto with the project's own generated config (passwords, ACL) on a free port."""
from __future__ import annotations

import contextlib
import json
import shutil
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from services.broker.mosquitto import write_broker_files
from services.common.config import Config
from services.common.state import init_state, mqtt_password
from tests.support.proc import Processes, free_config, port_open, wait_until


def mosquitto_binary() -> str:
    path = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    return path


def start_mosquitto(config: Config, procs: Processes):
    init_state(config)
    conf = write_broker_files(config)
    proc = procs.start("mosquitto", [mosquitto_binary(), "-c", str(conf)])
    wait_until(lambda: port_open(config.mqtt_port), 10, what="mosquitto to listen")
    return proc


@contextlib.contextmanager
def broker_under(tmp: Path, **settings: Any) -> Iterator[tuple[Config, Processes, Any]]:
    """For a stack shared by a module: a free_config at tmp/home with these settings, processes
    logging to tmp/proclogs, Mosquitto running (its process the third item); all stopped on exit."""
    config = free_config(tmp / "home", **settings)
    (tmp / "proclogs").mkdir()
    procs = Processes(tmp / "proclogs")
    try:
        yield config, procs, start_mosquitto(config, procs)
    finally:
        procs.stop_all()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int = 0  # as delivered: the lower of the publish's and the subscription's


@dataclass
class Subscriber:
    """A test MQTT client that records what it receives."""

    config: Config
    account: str
    password: str | None = None
    messages: list[Received] = field(default_factory=list)
    client: Any = None
    denied: list[int] = field(default_factory=list)
    unix: bool = False  # through the broker's Unix socket (Config.broker_socket), not TCP

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._subacks: dict[int, list] = {}
        c = _paho_client(self.unix)
        c.username_pw_set(self.account, self.password or mqtt_password(self.config, self.account))
        c.on_connect = lambda cl, ud, fl, rc, pr: rc == 0 and self._connected.set()
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        _connect(c, self.config, self.unix)
        c.loop_start()
        self.client = c
        wait_until(self._connected.is_set, 10, what=f"{self.account} to connect")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, msg.payload, bool(msg.retain), msg.qos))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: list, props: Any) -> None:
        self._subacks[mid] = list(reason_codes)

    def subscribe(self, topic: str, qos: int = 1) -> list:
        """Subscribe and wait for the SUBACK; returns its reason codes."""
        _, mid = self.client.subscribe(topic, qos)
        return wait_until(lambda: self._subacks.get(mid), 5, what=f"SUBACK for {topic}")

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [m.payload for m in self.messages if m.topic == topic]

    def topics(self) -> set[str]:
        with self._lock:
            return {m.topic for m in self.messages}

    def close(self) -> None:
        # Disconnect first: stopping the loop first makes paho wait out its select timeout.
        self.client.disconnect()
        self.client.loop_stop()


class SeqCounts:
    """A dashboard subscriber's count of each (device, seq) it saw: `seqs` under `lock`, on `client`."""

    lock: threading.Lock
    seqs: dict[str, Counter]
    client: mqtt.Client

    def counts(self, device: str) -> Counter:
        with self.lock:
            return Counter(self.seqs.get(device, Counter()))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class SeqDashboard(SeqCounts):
    """The dashboard account on Pico/+/json, counting every (device, seq) that reaches the public tree.
    persistent: a session the broker keeps (and quick reconnects), so nothing is missed across a
    broker restart."""

    def __init__(self, config: Config, persistent: bool = False) -> None:
        self.lock = threading.Lock()
        self.seqs: dict[str, Counter] = {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dash-{uuid.uuid4().hex[:8]}",
                                  clean_session=not persistent, protocol=mqtt.MQTTv311)
        self.client.username_pw_set("dashboard", mqtt_password(config, "dashboard"))
        if persistent:
            self.client.reconnect_delay_set(0.05, 0.5)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("Pico/+/json", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(config.host, config.mqtt_port)
        self.client.loop_start()
        wait_until(subscribed.is_set, 10, what="dashboard subscription")

    def _on_message(self, client, userdata, msg) -> None:
        body = json.loads(msg.payload)
        with self.lock:
            self.seqs.setdefault(body["device"], Counter())[body["seq"]] += 1


def connack(config: Config, account: str | None, password: str | None, unix: bool = False,
            client_id: str | None = None) -> Any:
    """The broker's answer (paho's reason code) to a login over TCP or its Unix socket, with a
    clean session (under `client_id`, a fresh one if None); no username at all when `account`
    is None."""
    c = _paho_client(unix, client_id)
    if account is not None:
        c.username_pw_set(account, password)
    codes: list = []
    c.on_connect = lambda cl, ud, fl, rc, pr: codes.append(rc)
    _connect(c, config, unix)
    c.loop_start()
    try:
        wait_until(lambda: codes, 10, what="the CONNACK")
    finally:
        c.loop_stop()
        c.disconnect()
    return codes[0]


def _paho_client(unix: bool, client_id: str | None = None) -> Any:
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"test-{uuid.uuid4().hex[:10]}",
                       protocol=mqtt.MQTTv311, transport="unix" if unix else "tcp")


def _connect(client: Any, config: Config, unix: bool) -> None:
    """Over TCP, or through the broker's Unix socket (Config.broker_socket)."""
    if unix:
        assert config.broker_socket is not None, "this config's broker has no Unix socket"
        client.connect(str(config.broker_socket))
    else:
        client.connect(config.host, config.mqtt_port)
