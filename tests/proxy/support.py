"""A running proxy with the real auth service and broker, and v1 devices to talk to it."""
from __future__ import annotations

import json
import secrets
import socket
import string
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from Crypto.Cipher import AES

from services.common import v1
from services.common.config import Config
from services.keystore.models import NewDevice
from services.keystore.sqlite import SQLiteKeyStore
from tests.support.broker import Subscriber
from tests.support.proc import Processes, wait_ready
from tests.support.stores import add_sqlite_device

# Short limits so the timeout tests take about a second.
FAST_ENV = {"MEDSEC_IDLE_TIMEOUT": "1.5", "MEDSEC_READING_TIMEOUT": "1.0"}
GOOD = {"Temp": 36.6, "TempMcu": 23.7, "PulseSig": 2.123, "Acel_x": 0.0, "Acel_y": -0.5,
        "Acel_z": 1.0, "TempMpu": 23.4}


def credentials() -> tuple[str, str]:
    alphabet = string.ascii_letters + string.digits
    return ("".join(secrets.choice(alphabet) for _ in range(16)),
            "".join(secrets.choice(alphabet) for _ in range(16)))


def encode(key: str, iv: str, plaintext: bytes, variant: str = "chained") -> bytes:
    return v1.encrypt(AES.new(key.encode(), AES.MODE_ECB).encrypt, iv.encode(), plaintext, variant)


def reading(key: str, iv: str, n: int = 0, variant: str = "chained") -> bytes:
    """The n-th reading of a device: a different text for every n below 100,000 (the proxy drops
    a byte-identical reading as a replay)."""
    values = dict(GOOD, Temp=36.0 + (n % 100) / 100, PulseSig=2.123 + (n // 100 % 1000) / 1000)
    return encode(key, iv, v1.format_reading(values), variant)


@dataclass
class Stack:
    config: Config
    env: dict[str, str]
    procs: Processes
    log_dir: Path
    monitor: Subscriber
    proxies: list = field(default_factory=list)
    offsets: dict[str, int] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)  # every key and iv registered, for leak checks
    history: list = field(default_factory=list)  # messages seen by earlier monitors of a shared stack

    def fresh(self) -> None:
        """For a stack shared by several tests: a new monitor, and logs read from here on."""
        self.monitor.close()
        self.history += self.monitor.messages
        self.monitor = Subscriber(self.config, "monitor")
        self.monitor.subscribe("medsec/#")
        self.offsets = {p.name[:-4]: p.stat().st_size for p in self.log_dir.glob("*.log")}

    def register(self, device: str, key: str | None = None, iv: str | None = None) -> tuple[str, str]:
        if key is None or iv is None:
            key, iv = credentials()
        self.secrets += [key, iv]
        add_sqlite_device(self.config, NewDevice(device, "v1", {"key": key, "iv": iv}))
        return key, iv

    def revoke(self, device: str) -> float:
        """Revoke in the store and announce it as keyadmin does; returns when the announcement left."""
        store = SQLiteKeyStore.open(self.config)
        try:
            store.revoke(device)
        finally:
            store.close()
        announcer = Subscriber(self.config, "keyadmin")
        sent = time.monotonic()
        info = announcer.client.publish("medsec/keys/events",
                                        json.dumps({"event": "revoked", "device": device, "ts": time.time()}),
                                        qos=1)
        info.wait_for_publish(5)
        announcer.client.disconnect()  # first, so the network thread wakes up and ends at once
        announcer.client.loop_stop()
        return sent

    def start_proxy(self, name: str = "proxy", port: int | None = None, **env: str):
        port = port or self.config.proxy_port
        proc = self.procs.start(name, [sys.executable, "-m", "services.proxy"],
                                env={**self.env, **FAST_ENV, "MEDSEC_PROXY_PORT": str(port), **env})
        log = self.log_dir / f"{name}.log"
        # From its log, not by probing the port: a probe would hold a connection slot for a moment.
        started = ("event=listening", "event=bus_subscribed")
        # 20 s: a start slowed by a busy machine is not what these tests check; a dead one fails at once.
        wait_ready(proc, log, lambda text: all(e in text for e in started), 20,
                   what=f"{name} to listen and follow key events")
        self.proxies.append(proc)
        return proc

    def log(self, name: str = "proxy") -> str:
        with open(self.log_dir / f"{name}.log", "rb") as f:
            f.seek(self.offsets.get(name, 0))
            return f.read().decode(errors="replace")

    def close_lines(self, reason: str, name: str = "proxy") -> list[str]:
        return [ln for ln in self.log(name).splitlines() if "event=close" in ln and f"reason={reason} " in ln]

    def events(self, device: str = "~unidentified") -> list[dict]:
        return [json.loads(p) for p in self.monitor.on(f"medsec/events/{device}")]

    def rejected(self, reason: str, device: str = "~unidentified") -> list[dict]:
        return [e for e in self.events(device) if e["event"] == "rejected" and e["reason"] == reason]

    def readings(self) -> list[dict]:
        """Every reading on the bus in arrival order: alone on medsec/ingest/<device>, or in a
        medsec/ingest/~batch array (several readings accepted in one turn of the proxy's loop)."""
        with self.monitor._lock:
            received = [(m.topic, m.payload) for m in self.monitor.messages]
        out: list[dict] = []
        for topic, payload in received:
            if topic == "medsec/ingest/~batch":
                out += json.loads(payload)
            elif topic.startswith("medsec/ingest/"):
                doc = json.loads(payload)
                assert topic == f"medsec/ingest/{doc['device']}"
                out.append(doc)
        return out

    def ingest(self, device: str) -> list[dict]:
        return [r for r in self.readings() if r["device"] == device]

    def ingest_devices(self) -> set[str]:
        return {r["device"] for r in self.readings()}


def connect(port: int, source: str | None = None, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(timeout)
    if source:
        sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True when the proxy closed the connection (EOF or reset) within `timeout`."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


class Reconnector(threading.Thread):
    """An attacker at one source address: connects again whenever the proxy closes it, one
    connection at a time, until stopped; each connection is handed to use(sock)."""

    def __init__(self, port: int, source: str) -> None:
        super().__init__(daemon=True)
        self.port, self.source = port, source
        self.connections = 0
        self.stopped = threading.Event()

    def use(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                sock = connect(self.port, source=self.source)
            except OSError:
                continue
            self.connections += 1
            try:
                self.use(sock)
            except OSError:
                pass  # closed by the proxy: connect again, as an attack tool would
            finally:
                sock.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)


class Streamer(threading.Thread):
    """A well-behaved device sending a reading every `interval` seconds until stopped (by default
    under MEDSEC_DEVICE_MAX_RATE, 10 readings/s)."""

    def __init__(self, port: int, key: str, iv: str, interval: float = 0.15, device: str = "",
                 source: str | None = None) -> None:
        super().__init__(daemon=True)
        self.device = device
        self.sock = connect(port, source)
        self.key, self.iv, self.interval = key, iv, interval
        self.sent = 0
        self.error: Exception | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                self.sock.sendall(reading(self.key, self.iv, self.sent))
                self.sent += 1
                self._stop_event.wait(self.interval)
        except OSError as exc:
            self.error = exc

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)
        self.sock.close()
