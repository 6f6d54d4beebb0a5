"""The line's state machine, pure: messages in, (new state, messages out) or a refusal.

Invariants: one station at a time holds the turn (`position`); it receives its
file with a fresh turn token; its results must carry that token; after a pass it
sends done, which is recorded and hands the turn (a `go`) to the next station.
A refused message leaves the state exactly as it was (transitions work on a copy).
"""
from __future__ import annotations

import copy
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from services.common.errors import ReasonError
from services.dispatch.params import ParamFile


class Refused(ReasonError):
    """A well-sealed message the workflow does not accept now. `reason` is a stable code."""


@dataclass(frozen=True)
class Out:
    """A message to seal for `station` and publish on its `leaf` topic."""

    station: str
    leaf: str  # params | verdict | go
    kind: str  # params | verdict | refused | ack | go
    body: dict[str, Any]


@dataclass
class LineState:
    run: str
    stations: list[str]
    position: int = 0
    turn: str | None = None
    passed_set: int | None = None
    attempts: dict[str, int] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.position >= len(self.stations)

    @property
    def current(self) -> str | None:
        return None if self.complete else self.stations[self.position]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> LineState:
        return cls(
            run=str(doc["run"]), stations=list(doc["stations"]), position=int(doc["position"]),
            turn=doc.get("turn"), passed_set=doc.get("passed_set"),
            attempts=dict(doc.get("attempts", {})), done=list(doc.get("done", [])),
        )


def new_line(run: str, stations: list[str] | tuple[str, ...]) -> LineState:
    return LineState(run=run, stations=list(stations))


def _check_turn(state: LineState, station: str, what: str) -> None:
    if station not in state.stations:
        raise Refused("not_in_line", f"{station!r} is not a station of line {state.run!r}")
    if state.complete:
        raise Refused("line_complete", f"line {state.run!r} is complete")
    if station in state.done:
        raise Refused("already_done", f"{station!r} is already done")
    if station != state.current:
        raise Refused("out_of_turn", f"{what} from {station!r} while it is {state.current!r}'s turn")


def _check_body(body: object, station: str, state: LineState, token: bool) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Refused("bad_message", "the payload is not a JSON object")
    if body.get("station") != station:
        named = body.get("station")
        raise Refused("wrong_station", f"payload names station {named!r}, sealed by {station!r}")
    if token and (body.get("run") != state.run or body.get("turn") != state.turn or state.turn is None):
        raise Refused("wrong_turn", "the turn token is not the one issued for this station's turn")
    return body


Step = tuple[LineState, list[Out]]


def on_request(state: LineState, station: str, body: object, params: ParamFile) -> Step:
    _check_turn(state, station, "request")
    _check_body(body, station, state, token=False)
    new = copy.deepcopy(state)
    new.turn = secrets.token_hex(8)
    new.passed_set = None
    payload = {**params.for_station(), "run": new.run, "turn": new.turn}
    return new, [Out(station, "params", "params", payload)]


def on_result(state: LineState, station: str, body: object, params: ParamFile) -> Step:
    _check_turn(state, station, "result")
    msg = _check_body(body, station, state, token=True)
    index = msg.get("set")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(params.value_sets):
        raise Refused("bad_message", f"set must be an index into the {len(params.value_sets)} value sets")
    passed, why = params.rule.check(msg.get("result"))
    new = copy.deepcopy(state)
    new.attempts[station] = new.attempts.get(station, 0) + 1
    new.passed_set = index if passed else None
    verdict = {"station": station, "run": new.run, "turn": new.turn, "set": index,
               "verdict": "pass" if passed else "fail", "detail": why}
    return new, [Out(station, "verdict", "verdict", verdict)]


def on_done(state: LineState, station: str, body: object) -> Step:
    _check_turn(state, station, "done")
    _check_body(body, station, state, token=True)
    if state.passed_set is None:
        raise Refused("not_passed", f"{station!r} has no passing result in this turn")
    new = copy.deepcopy(state)
    new.done.append(station)
    new.position += 1
    new.turn = None
    new.passed_set = None
    nxt = new.current
    ack = {"station": station, "run": new.run, "recorded": "done", "next": nxt}
    outs = [Out(station, "verdict", "ack", ack)]
    if nxt is not None:
        outs.append(Out(nxt, "go", "go", {"station": nxt, "run": new.run, "after": station}))
    return new, outs
