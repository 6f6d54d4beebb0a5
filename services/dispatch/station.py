"""A station of the line: asks for its file, opens it, tries the value sets in order, reports.

`StationClient.run()` plays one station to the end of its turn and returns what
happened; `operation` maps a value set to a result object (the real machine's job;
`demo_operation` for demos and tests). Every step goes to `say`.
"""
from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from Crypto.PublicKey import RSA
from paho.mqtt.enums import CallbackAPIVersion

from services.common import envelope, lookup
from services.common.config import Config
from services.dispatch import topics
from services.dispatch.nonces import StoredNonceCache
from services.dispatch.provisioning import station_dir

Operation = Callable[[dict[str, Any]], dict[str, Any]]


def demo_operation(value_set: dict[str, Any]) -> dict[str, Any]:
    """The demo machine: it reaches setpoint x gain (a gain other than 1.0 misses the target)."""
    setpoint = float(value_set.get("setpoint", 0.0))
    gain = float(value_set.get("gain", 1.0))
    return {"result": round(setpoint * gain, 3)}


class StationError(Exception):
    pass


@dataclass
class Outcome:
    station: str
    passed: bool = False
    passed_set: int | None = None
    attempts: int = 0
    refusals: list[str] = field(default_factory=list)
    next_station: str | None = None
    params_bytes: int = 0


class StationClient:
    def __init__(
        self,
        config: Config,
        station: str,
        key: RSA.RsaKey,
        server_key: RSA.RsaKey,
        password: str,
        operation: Operation = demo_operation,
        say: Callable[[str], None] = print,
        window: float = envelope.DEFAULT_WINDOW,
        retry: float = 5.0,
    ) -> None:
        self.retry = retry
        self.config = config
        self.station = station
        self.key = key
        self.server_key = server_key
        self.password = password
        self.operation = operation
        self.say = say
        # The station keeps its nonce cache on disk too: `medsec station run` is a process that restarts.
        nonces = StoredNonceCache(station_dir(config, station) / "nonces.json", window)
        self.opener = envelope.Opener(
            station, key, lambda sender: server_key if sender == topics.SERVER_ID else None, window,
            nonces=nonces,
        )
        self.inbox: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._subscribed = threading.Event()
        self._failed: list[str] = []
        self.client: mqtt.Client | None = None

    # --- transport ---
    def _connect(self, timeout: float) -> None:
        name = topics.account(self.station)
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:6]}",
                        protocol=mqtt.MQTTv311)
        c.username_pw_set(name, self.password)
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *a: self._subscribed.set()
        c.on_message = self._on_message
        lookup.retrying(lambda: c.connect(self.config.broker_host, self.config.mqtt_port, keepalive=15))
        c.loop_start()
        self.client = c
        if not self._subscribed.wait(timeout):
            self.close()
            why = ", ".join(self._failed) or "timeout"
            raise StationError(f"could not log in as {name} ({why}); is the station registered?")

    def _on_connect(self, c: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc != 0:
            self._failed.append(str(rc))
            return
        c.subscribe([(topics.topic(self.station, leaf), 1) for leaf in topics.DOWNSTREAM])

    def _on_message(self, c: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            env, plain = self.opener.open(msg.payload)
            body = json.loads(plain)
        except envelope.EnvelopeError as exc:
            self.say(f"[{self.station}] rejected an envelope on {msg.topic}: {exc.reason}")
            return
        except ValueError:
            self.say(f"[{self.station}] rejected an envelope on {msg.topic}: not JSON")
            return
        self.inbox.put((env.kind, body))

    def send(self, leaf: str, kind: str, body: dict[str, Any]) -> None:
        data = envelope.seal(json.dumps(body).encode(), kind=kind, sender=self.station,
                             recipient=topics.SERVER_ID, sender_key=self.key, recipient_key=self.server_key)
        assert self.client is not None
        self.client.publish(topics.topic(self.station, leaf), data, qos=1).wait_for_publish(10)

    def close(self) -> None:
        if self.client is not None:
            self.client.loop_stop()
            self.client.disconnect()

    def _next(self, deadline: float) -> tuple[str, dict[str, Any]]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise StationError(f"{self.station}: no answer from the server in time")
        try:
            return self.inbox.get(timeout=left)
        except queue.Empty:
            raise StationError(f"{self.station}: no answer from the server in time") from None

    # --- the station's turn ---
    def run(self, timeout: float = 60.0) -> Outcome:
        deadline = time.monotonic() + timeout
        self._connect(min(timeout, 10.0))
        out = Outcome(self.station)
        me = {"station": self.station}
        try:
            self.say(f"[{self.station}] requesting parameters")
            self.send("request", "request", me)
            while True:
                try:
                    kind, body = self._next(min(deadline, time.monotonic() + self.retry))
                except StationError:
                    if time.monotonic() >= deadline:
                        raise
                    # No answer (server down or not yet subscribed, or a lost go): ask again, quietly
                    # when the last answer was "wait".
                    if not out.refusals or out.refusals[-1] != "out_of_turn":
                        self.say(f"[{self.station}] no answer yet: requesting again")
                    self.send("request", "request", me)
                    continue
                if kind == "refused":
                    out.refusals.append(body.get("reason", "?"))
                    if body.get("reason") == "out_of_turn":
                        if out.refusals.count("out_of_turn") == 1:
                            self.say(f"[{self.station}] refused (out_of_turn): waiting for go")
                        continue
                    raise StationError(f"{self.station}: refused: {body.get('reason')}: {body.get('detail')}")
                if kind == "go":
                    self.say(f"[{self.station}] go received ({body.get('after')} is done): requesting")
                    self.send("request", "request", me)
                    continue
                if kind == "params":
                    out.params_bytes = len(json.dumps(body))
                    return self._work(body, out, deadline)
        finally:
            self.close()

    def _work(self, params: dict[str, Any], out: Outcome, deadline: float) -> Outcome:
        sets = params.get("value_sets") or []
        turn = {"station": self.station, "run": params.get("run"), "turn": params.get("turn")}
        self.say(f"[{self.station}] parameters received: {len(sets)} value set(s)")
        for index, value_set in enumerate(sets):
            result = self.operation(value_set)
            out.attempts += 1
            self.say(f"[{self.station}] value set {index + 1}: result {json.dumps(result)}")
            self.send("result", "result", {**turn, "set": index, "result": result})
            kind, body = self._expect(("verdict", "refused"), deadline)
            if kind == "refused":
                raise StationError(f"{self.station}: result refused: {body.get('reason')}")
            self.say(f"[{self.station}] verdict: {body.get('verdict')} ({body.get('detail')})")
            if body.get("verdict") == "pass":
                out.passed, out.passed_set = True, index
                self.send("result", "done", turn)
                kind, body = self._expect(("ack", "refused"), deadline)
                if kind == "refused":
                    raise StationError(f"{self.station}: done refused: {body.get('reason')}")
                out.next_station = body.get("next")
                nxt = out.next_station or "none (line complete)"
                self.say(f"[{self.station}] done recorded; next: {nxt}")
                return out
        self.say(f"[{self.station}] every value set failed")
        return out

    def _expect(self, kinds: tuple[str, ...], deadline: float) -> tuple[str, dict[str, Any]]:
        while True:
            kind, body = self._next(deadline)
            if kind in kinds:
                return kind, body
            self.say(f"[{self.station}] ignoring {kind} while waiting for {'/'.join(kinds)}")
