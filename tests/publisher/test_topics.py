"""The pure mapping: bus message -> public topics, and the shape checks before it."""
from __future__ import annotations

import json

import pytest

from services.common.readings import ReadingError
from services.publisher.topics import (
    BusMessageError,
    alert_message,
    parse_ingest,
    public_messages,
    qos_for,
    status_message,
)

VALUES = {"Temp": "36.600", "TempMcu": "23.700", "PulseSig": "2.123", "Acel_x": "-0.01",
          "Acel_y": "0.000", "Acel_z": "1.002", "TempMpu": "23.400"}


def message(**over: object) -> dict:
    msg = {"device": "pico-1", "ts": 1763790000.125, "seq": None, "protocol": "v1", "values": dict(VALUES),
           "src": ["10.0.0.7", 50123], "gw": ["127.0.0.1", 9998], "uid": "p1:1"}
    msg.update(over)
    return msg


def encode(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_every_public_topic_with_the_exact_strings() -> None:
    reading = parse_ingest("medsec/ingest/pico-1", encode(message()))
    out = public_messages(reading)
    assert out[:-1] == [
        ("Pico/pico-1/Physiological_Data/Temperature", b"36.600", False),
        ("Pico/pico-1/Physiological_Data/Pulse_Signal", b"2.123", False),
        ("Pico/pico-1/Physiological_Data/Accelerometer/x", b"-0.01", False),
        ("Pico/pico-1/Physiological_Data/Accelerometer/y", b"0.000", False),
        ("Pico/pico-1/Physiological_Data/Accelerometer/z", b"1.002", False),
        ("Pico/pico-1/Internal_Device_Data/Temperature/MCU", b"23.700", False),
        ("Pico/pico-1/Internal_Device_Data/Temperature/MPU", b"23.400", False),
        ("Pico/pico-1/Ip_address", b"10.0.0.7", True),
        ("Pico/pico-1/Port_address", b"50123", True),
        ("Pico/pico-1/Internal_Server/Ip_address", b"127.0.0.1", True),
        ("Pico/pico-1/Internal_Server/Port_address", b"9998", True),
    ]
    topic, payload, retain = out[-1]
    assert (topic, retain) == ("Pico/pico-1/json", False)
    assert json.loads(payload) == {
        "device": "pico-1", "ts": 1763790000.125, "seq": None, "protocol": "v1",
        "Temp": 36.6, "TempMcu": 23.7, "PulseSig": 2.123, "Acel_x": -0.01, "Acel_y": 0.0,
        "Acel_z": 1.002, "TempMpu": 23.4,
    }
    assert len({t for t, _, _ in out}) == 12
    # the seven values at the legacy QoS, everything else (addresses, json) at the public one
    assert [qos_for(t, 2, 0) for t, _, _ in out] == [0] * 7 + [2] * 5
    assert [qos_for(t, 1, 2) for t, _, _ in out] == [2] * 7 + [1] * 5
    for other in ("Pico/pico-1/status", "Pico/pico-1/alert", "medsec/events/pico-1",
                  "Pico/Temperature/json", "Pico/pico-1/Physiological_Data/Temperature/x"):
        assert qos_for(other, 2, 0) == 2, other


def test_v2_json_carries_the_sequence_number() -> None:
    payload = encode(message(device="d.2", seq=41, protocol="v2", uid=None))
    reading = parse_ingest("medsec/ingest/d.2", payload)
    assert reading.dedup_key == ("seq", None, 41)
    rotated = parse_ingest("medsec/ingest/d.2", encode(message(device="d.2", seq=41, gen=3, protocol="v2",
                                                                uid=None)))
    assert rotated.gen == 3 and rotated.dedup_key == ("seq", 3, 41) != reading.dedup_key
    doc = json.loads(public_messages(reading)[-1][1])
    assert (doc["seq"], doc["protocol"], doc["device"]) == (41, "v2", "d.2")


@pytest.mark.parametrize(
    "topic,payload,reason",
    [
        ("medsec/ingest/pico-1", b"not json", "bad_bus_message"),
        ("medsec/ingest/pico-1", b"\xff\xfe", "bad_bus_message"),
        ("medsec/ingest/pico-1", b"[1,2]", "bad_bus_message"),
        ("medsec/ingest/pico-1", b"{" + b" " * 20000 + b"}", "bad_bus_message"),
        ("medsec/ingest/bad~id", encode(message(device="bad~id")), "bad_bus_message"),
        ("medsec/ingest/pico-2", encode(message()), "device_mismatch"),
        ("medsec/ingest/pico-1", encode(message(device=None)), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(ts="now")), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(ts=True)), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(seq=-1)), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(seq=1.5)), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(protocol="v3")), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(uid=None)), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(uid=7)), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(values=["36.600"])), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(src="10.0.0.7:1")), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(gw=["127.0.0.1", 70000])), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(gen=-1)), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(gen="2")), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(gen=True)), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(gen=1.0)), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(seq=True)), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(ts=-0.5)), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(ts=None)), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(uid="")), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(uid="u" * 129)), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(src=["10.0.0.7", True])), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(src=["10.0.0.7", 1.0])), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(src=["10.0.0.7", -1])), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(src=["", 1])), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(src=["h" * 65, 1])), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(src=[7, 1])), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(src=["10.0.0.7", 1, 2])), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(gw=None)), "bad_bus_message"),
        ("medsec/ingest/pico-1", encode(message(values={"Temp": "36.600"} | {str(n): "1" for n in range(6)})),
         "unknown_field"),
        ("medsec/ingest/..", encode(message(device="..")), "bad_bus_message"),
        ("medsec/ingest/.", encode(message(device=".")), "bad_bus_message"),
    ],
)
def test_bad_shapes_are_refused_with_a_reason(topic: str, payload: bytes, reason: str) -> None:
    with pytest.raises((BusMessageError, ReadingError)) as err:
        parse_ingest(topic, payload)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"Temp": None}, "missing_field"),
        ({"PulseSig": "abc"}, "not_numeric"),
        ({"PulseSig": 2.1}, "not_numeric"),
        ({"PulseSig": "3.400"}, "out_of_range"),
        ({"Temp": "99.000"}, "out_of_range"),
        ({"Acel_z": "-17.00"}, "out_of_range"),
        ({"Extra": "1.000"}, "unknown_field"),
    ],
)
def test_bad_values_are_refused_with_a_reason(change: dict, reason: str) -> None:
    values = dict(VALUES)
    for key, value in change.items():
        if value is None:
            del values[key]
        else:
            values[key] = value
    with pytest.raises(ReadingError) as err:
        parse_ingest("medsec/ingest/pico-1", encode(message(values=values)))
    assert err.value.reason == reason


@pytest.mark.parametrize(
    "topic,event,expected",
    [
        ("medsec/events/pico-1", {"event": "connect", "device": "pico-1"},
         ("Pico/pico-1/status", b"online", True)),
        ("medsec/events/pico-1", {"event": "disconnect", "device": "pico-1"},
         ("Pico/pico-1/status", b"offline", True)),
        ("medsec/events/pico-1", {"event": "rejected", "device": "pico-1", "reason": "not_json"}, None),
        ("medsec/events/~unidentified", {"event": "connect", "device": None}, None),
        ("medsec/events/~unidentified", {"event": "disconnect", "device": "~unidentified"}, None),
        ("medsec/events/pico-1", {"event": "connect", "device": "pico-2"}, None),
        ("medsec/events/pico-1", ["connect"], None),
    ],
)
def test_status_follows_connect_and_disconnect_only(topic: str, event: object, expected: object) -> None:
    assert status_message(topic, encode(event)) == expected


def test_status_ignores_garbage() -> None:
    assert status_message("medsec/events/pico-1", b"\x00garbage") is None


@pytest.mark.parametrize("event,state", [("duplicate_session", "alert"), ("duplicate_session_end", "clear")])
def test_duplicate_sessions_map_to_a_retained_alert(event: str, state: str) -> None:
    topic, payload, retain = alert_message("medsec/events/pico-1", encode(
        {"event": event, "device": "pico-1", "reason": "new_address", "detail": "x" * 500, "ts": 3,
         "src": ["10.0.0.1", 1], "peer": ["10.0.0.2", 2]}))
    doc = json.loads(payload)
    assert (topic, retain) == ("Pico/pico-1/alert", True)
    assert (doc["rule"], doc["state"]) == ("duplicate_session", state)
    assert len(doc["text"]) == 200 and doc["src"] == ["10.0.0.1", 1] and doc["peer"] == ["10.0.0.2", 2]


@pytest.mark.parametrize("topic,event", [
    ("medsec/events/pico-1", {"event": "connect", "device": "pico-1"}),
    ("medsec/events/pico-1", {"event": "dropped", "device": "pico-1", "reason": "replay"}),
    ("medsec/events/~unidentified", {"event": "duplicate_session", "device": None}),
    ("medsec/events/pico-1", {"event": "duplicate_session", "device": "pico-2"}),
    ("medsec/events/..", {"event": "duplicate_session", "device": ".."}),
    ("medsec/events/pico-1", ["duplicate_session"]),
])
def test_other_events_are_no_alert(topic: str, event: object) -> None:
    assert alert_message(topic, encode(event)) is None
    assert alert_message("medsec/events/pico-1", b"\x00garbage") is None


def test_value_messages_leave_out_the_addresses() -> None:
    reading = parse_ingest("medsec/ingest/pico-1", encode(message()))
    full = public_messages(reading)
    short = public_messages(reading, addresses=False)
    assert short == [m for m in full if not m[0].endswith("_address")]
    assert [t for t, _, _ in short][-1] == "Pico/pico-1/json" and len(short) == 8
    assert all(not retain for _, _, retain in short)
