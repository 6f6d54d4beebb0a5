"""The line's state machine and the parameter files, as pure code."""
from __future__ import annotations

import json

import pytest

from services.dispatch import workflow as W
from services.dispatch.params import ParamsError, Rule, load_line, parse_line, parse_param_file

FILE = {"station": "a", "value_sets": [{"g": 1.3}, {"g": 1.0}],
        "accept": {"field": "result", "min": 95, "max": 105}, "note": "travels with the sets"}


def params(station="a"):
    return parse_param_file({**FILE, "station": station}, station)


def test_rule_checks_bounds_and_types():
    rule = Rule("result", 95, 105)
    assert rule.check({"result": 100})[0]
    assert not rule.check({"result": 130})[0]
    assert not rule.check({"result": 94.9})[0]
    for bad in ({"result": "100"}, {"result": True}, {"result": float("nan")}, {}, [], None):
        assert not rule.check(bad)[0]


def test_param_file_validation():
    p = params()
    expected = {"note": "travels with the sets", "station": "a", "value_sets": FILE["value_sets"]}
    assert p.for_station() == expected
    assert "accept" not in p.for_station()  # the rule stays on the server
    for bad in ({**FILE, "value_sets": []}, {**FILE, "accept": {"min": 1}}, {**FILE, "station": "b"},
                {**FILE, "accept": {"field": "r", "max": "x"}}, []):
        with pytest.raises(ParamsError):
            parse_param_file(bad, "a")


def test_line_validation(tmp_path):
    assert parse_line({"run": "r", "stations": ["a", "b"]}).stations == ("a", "b")
    bads = ({"stations": []}, {"stations": ["a", "a"]}, {"stations": ["dispatch"]}, {"stations": ["a/b"]})
    for bad in bads:
        with pytest.raises(ParamsError):
            parse_line(bad)
    assert load_line(tmp_path, "x, y").stations == ("x", "y")
    with pytest.raises(ParamsError):
        load_line(tmp_path)
    (tmp_path / "line.json").write_text(json.dumps({"run": "r2", "stations": ["q"]}))
    assert load_line(tmp_path).run == "r2"


def test_full_line_with_a_retry_and_every_refusal_leaves_state_alone():
    s = W.new_line("r", ["a", "b"])
    refusals = [
        lambda: W.on_request(s, "b", {"station": "b"}, params("b")),      # out of turn
        lambda: W.on_request(s, "z", {"station": "z"}, params("z")),      # not in line
        lambda: W.on_request(s, "a", {"station": "b"}, params("a")),      # payload names another station
        lambda: W.on_done(s, "a", {"station": "a", "run": "r", "turn": None}),  # no turn issued
    ]
    for attempt in refusals:
        snapshot = json.dumps(s.to_dict())
        with pytest.raises(W.Refused):
            attempt()
        assert json.dumps(s.to_dict()) == snapshot
    s, outs = W.on_request(s, "a", {"station": "a"}, params("a"))
    assert [(o.station, o.kind) for o in outs] == [("a", "params")]
    turn = {"station": "a", "run": "r", "turn": outs[0].body["turn"]}
    s, outs = W.on_result(s, "a", {**turn, "set": 0, "result": {"result": 130}}, params("a"))
    assert outs[0].body["verdict"] == "fail"
    with pytest.raises(W.Refused) as err:
        W.on_done(s, "a", turn)
    assert err.value.reason == "not_passed"
    with pytest.raises(W.Refused) as err:
        W.on_result(s, "a", {**turn, "set": 7, "result": {"result": 100}}, params("a"))
    assert err.value.reason == "bad_message"
    s, outs = W.on_result(s, "a", {**turn, "set": 1, "result": {"result": 100}}, params("a"))
    assert outs[0].body["verdict"] == "pass"
    s, outs = W.on_done(s, "a", turn)
    assert [(o.station, o.kind) for o in outs] == [("a", "ack"), ("b", "go")]
    assert s.done == ["a"] and s.current == "b" and s.attempts == {"a": 2}
    with pytest.raises(W.Refused) as err:
        W.on_request(s, "a", {"station": "a"}, params("a"))
    assert err.value.reason == "already_done"
    s, outs = W.on_request(s, "b", {"station": "b"}, params("b"))
    turn = {"station": "b", "run": "r", "turn": outs[0].body["turn"]}
    s, _ = W.on_result(s, "b", {**turn, "set": 1, "result": {"result": 100}}, params("b"))
    s, outs = W.on_done(s, "b", turn)
    assert s.complete and [(o.kind, o.body.get("next")) for o in outs] == [("ack", None)]
    assert W.LineState.from_dict(json.loads(json.dumps(s.to_dict()))) == s

