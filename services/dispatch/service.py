"""The dispatch server: opens sealed envelopes from stations, runs the line, seals the answers.

`DispatchService` is the logic (no MQTT in it: it gets topic + bytes and a
`publish` callable); transport.py carries it over the bus and `__main__` wires
them (the same lifecycle as auth and proxy).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from Crypto.PublicKey import RSA

from services.common import envelope
from services.common.config import Config
from services.common.logs import kv
from services.common.state import write_secret
from services.dispatch import topics, workflow
from services.dispatch.keys import StationKeyError, dispatch_dir
from services.dispatch.nonces import StoredNonceCache
from services.dispatch.params import Line, ParamFile, ParamsError, load_line, load_param_file
from services.dispatch.workflow import LineState, Out, Refused

log = logging.getLogger("medsec.dispatch")

KINDS = {"request": ("request",), "result": ("result", "done")}


@dataclass(frozen=True)
class DispatchConfig:
    params_dir: Path
    state_path: Path
    nonces_path: Path
    line_env: str | None = None
    window: float = envelope.DEFAULT_WINDOW
    key_ttl: float = 0.0

    @classmethod
    def from_config(cls, config: Config) -> DispatchConfig:
        return cls(
            params_dir=Path(config.dispatch_params or dispatch_dir(config) / "params"),
            state_path=dispatch_dir(config) / "state.json",
            nonces_path=dispatch_dir(config) / "nonces.json",
            line_env=config.dispatch_line or None,
            window=config.dispatch_window,
            key_ttl=config.dispatch_key_ttl,
        )


def load_state(path: Path) -> LineState | None:
    try:
        return LineState.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        log.error(kv(event="state_unreadable", path=path, error=exc))
        return None


def save_state(path: Path, state: LineState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_secret(path, json.dumps(state.to_dict(), indent=1).encode())  # atomic: never half a state


class DispatchService:
    def __init__(
        self,
        cfg: DispatchConfig,
        server_key: RSA.RsaKey,
        station_keys: Callable[[str], RSA.RsaKey | None],
        publish: Callable[[str, bytes, bool], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.server_key = server_key
        self.station_keys = station_keys
        self.publish = publish
        self.clock = clock
        self.opener = envelope.Opener(topics.SERVER_ID, server_key, station_keys, cfg.window, clock,
                                      nonces=StoredNonceCache(cfg.nonces_path, cfg.window, clock))
        self.state: LineState | None = load_state(cfg.state_path)
        self.rejected: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.handled = 0
        self._lock = threading.Lock()

    # --- the line ---
    def _line(self) -> Line:
        return load_line(self.cfg.params_dir, self.cfg.line_env)

    def _current_state(self) -> LineState:
        line = self._line()
        state = self.state
        if state is None or state.run != line.run or state.stations != list(line.stations):
            state = workflow.new_line(line.run, line.stations)
            log.info(kv(event="new_run", run=line.run, stations=",".join(line.stations)))
        return state

    # --- messages ---
    def handle(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self._handle(topic, payload)
            self.handled += 1
            self.publish_status()

    def _reject(self, reason: str, station: str | None, detail: str) -> None:
        self.rejected[reason] += 1
        log.warning(kv(event="rejected", reason=reason, station=station or "-", detail=detail))

    def _handle(self, topic: str, payload: bytes) -> None:
        where = topics.parse_upstream(topic)
        if where is None:
            self._reject("bad_topic", None, topic)
            return
        station, leaf = where
        try:
            env, plain = self.opener.open(payload)
        except envelope.EnvelopeError as exc:
            self._reject(exc.reason, station, exc.detail)
            return
        except StationKeyError as exc:
            self._reject("keys_unavailable", station, str(exc))
            return
        if env.sender != station:
            self._reject("sender_mismatch", station, f"sealed by {env.sender!r} on {station!r}'s topic")
            return
        if env.kind not in KINDS[leaf]:
            self._reject("wrong_kind", station, f"{env.kind!r} on the {leaf} topic")
            return
        try:
            body = json.loads(plain)
        except ValueError:
            body = None
        # From here the sender is authentic: refusals are answered, sealed, on its verdict topic.
        try:
            state = self._current_state()
            if env.kind == "request":
                new, outs = workflow.on_request(state, station, body, self._params(station))
            elif env.kind == "result":
                new, outs = workflow.on_result(state, station, body, self._params(station))
            else:
                new, outs = workflow.on_done(state, station, body)
        except Refused as exc:
            self._refuse(station, env.kind, exc.reason, exc.detail)
            return
        except ParamsError as exc:
            log.error(kv(event="params_error", station=station, error=exc))
            self._refuse(station, env.kind, "no_params", "the server has no usable file for this station")
            return
        # Persist before answering: an answer is never ahead of the recorded state.
        save_state(self.cfg.state_path, new)
        self.state = new
        log.info(kv(event=env.kind, station=station, run=new.run, position=new.position,
                    done=",".join(new.done) or "-"))
        for out in outs:
            self._send(out)

    def _refuse(self, station: str, kind: str, reason: str, detail: str) -> None:
        self.refused[reason] += 1
        log.warning(kv(event="refused", reason=reason, station=station, kind=kind, detail=detail))
        body = {"station": station, "reason": reason, "detail": detail, "kind": kind}
        self._send(Out(station, "verdict", "refused", body))

    def _params(self, station: str) -> ParamFile:
        return load_param_file(self.cfg.params_dir, station)

    def _send(self, out: Out) -> None:
        try:
            key = self.station_keys(out.station)
        except StationKeyError as exc:
            key = None
            log.error(kv(event="send_failed", station=out.station, kind=out.kind, error=exc))
        if key is None:
            log.warning(kv(event="not_sent", station=out.station, kind=out.kind, reason="no_station_key"))
            return
        data = envelope.seal(
            json.dumps(out.body).encode(), kind=out.kind, sender=topics.SERVER_ID, recipient=out.station,
            sender_key=self.server_key, recipient_key=key, now=self.clock(),
        )
        self.publish(topics.topic(out.station, out.leaf), data, False)
        log.info(kv(event="sent", station=out.station, kind=out.kind, bytes=len(data)))

    # --- observability (no secrets: progress and counters only) ---
    def status(self) -> dict[str, Any]:
        s = self.state
        return {
            "run": s.run if s else None,
            "stations": s.stations if s else [],
            "position": s.position if s else 0,
            "current": s.current if s else None,
            "done": s.done if s else [],
            "attempts": s.attempts if s else {},
            "complete": bool(s and s.complete),
            "rejected": dict(self.rejected),
            "refused": dict(self.refused),
            "handled": self.handled,
            "ts": self.clock(),
        }

    def publish_status(self) -> None:
        self.publish(topics.STATUS, json.dumps(self.status()).encode(), True)
