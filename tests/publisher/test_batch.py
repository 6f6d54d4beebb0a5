"""medsec/ingest/~batch: several readings in one bus message publish exactly what they would alone."""
from __future__ import annotations

import json
import logging

import pytest

from services.common.bus import INGEST_BATCH, MAX_BATCH_READINGS
from services.publisher.service import PublisherService

VALUES = {"Temp": "36.600", "TempMcu": "23.700", "PulseSig": "2.123", "Acel_x": "-0.01",
          "Acel_y": "0.000", "Acel_z": "1.002", "TempMpu": "23.400"}


def item(device: str, n: int, **over: object) -> dict:
    doc = {"device": device, "ts": 1.0 + n, "seq": None, "gen": None, "protocol": "v1",
           "values": {**VALUES, "Temp": f"{30 + n / 1000:.3f}"}, "src": ["10.0.0.1", 5000],
           "gw": ["127.0.0.1", 9998], "uid": f"p:{device}:{n}"}
    doc.update(over)
    return doc


def service() -> PublisherService:
    return PublisherService(logging.getLogger("test"), clock=lambda: 5.0)


def alone(items: list[dict]) -> list:
    one = service()
    out = []
    for doc in items:
        out += one.handle(f"medsec/ingest/{doc['device']}", json.dumps(doc).encode())
    return out


@pytest.mark.parametrize("devices,per_device", [(1, 2), (3, 5), (20, 3), (64, 1)])
def test_a_batch_publishes_what_its_readings_publish_alone_in_order(devices: int, per_device: int) -> None:
    items = [item(f"d{d}", n) for n in range(per_device) for d in range(devices)]
    batched = service().handle(INGEST_BATCH, json.dumps(items).encode())
    assert batched == alone(items)
    temps = [(t.split("/")[1], json.loads(p)["Temp"]) for t, p, _ in batched if t.endswith("/json")]
    assert temps == [(f"d{d}", 30 + n / 1000) for n in range(per_device) for d in range(devices)]


def test_v2_and_duplicates_inside_and_across_batches() -> None:
    pub = service()
    v2 = [item("d1", n, protocol="v2", seq=10 + n, gen=1, uid=None) for n in range(3)]
    first = pub.handle(INGEST_BATCH, json.dumps(v2 + [v2[1]]).encode())  # a resent one inside
    assert [json.loads(p)["seq"] for t, p, _ in first if t.endswith("/json")] == [10, 11, 12]
    again = pub.handle(INGEST_BATCH, json.dumps(v2).encode())  # the whole batch redelivered
    assert again == [] and pub.counters.duplicates == 4


@pytest.mark.parametrize("bad,reason", [
    ({"values": {**VALUES, "Temp": "hot"}}, "not_numeric"),
    ({"values": {**VALUES, "PulseSig": "9.000"}}, "out_of_range"),
    ({"device": "bad~id"}, "bad_bus_message"),
    ({"src": "nowhere"}, "bad_bus_message"),
    ({"uid": None}, "bad_bus_message"),
])
def test_a_bad_reading_in_a_batch_is_rejected_alone(bad: dict, reason: str) -> None:
    items = [item("d1", 0), item("d2", 0), {**item("d1", 1), **bad}, item("d1", 2)]
    out = service().handle(INGEST_BATCH, json.dumps(items).encode())
    events = [json.loads(p) for t, p, _ in out if t.startswith("medsec/events/")]
    assert [(e["event"], e["reason"]) for e in events] == [("rejected", reason)]
    device = bad.get("device", "d1")
    assert events[0]["device"] == (device if device != "bad~id" else None)
    jsons = [(t, json.loads(p)["ts"]) for t, p, _ in out if t.endswith("/json")]
    assert jsons == [("Pico/d1/json", 1.0), ("Pico/d2/json", 1.0), ("Pico/d1/json", 3.0)]


@pytest.mark.parametrize("payload", [
    b"not json", b"\xff\xfe", b"{}", b"[]", b'"text"', b"[" * 100_000,
    json.dumps([item("d1", n) for n in range(MAX_BATCH_READINGS + 1)]).encode(),
    b"[" + b" " * (MAX_BATCH_READINGS * 16 * 1024) + b"]",
])
def test_a_malformed_batch_is_one_rejection_and_nothing_public(payload: bytes) -> None:
    pub = service()
    out = pub.handle(INGEST_BATCH, payload)
    assert [t for t, _, _ in out] == ["medsec/events/~unidentified"]
    event = json.loads(out[0][1])
    assert (event["event"], event["reason"], event["device"]) == ("rejected", "bad_bus_message", None)
    assert pub.counters.rejected == {"bad_bus_message": 1} and pub.counters.accepted == 0


def test_items_that_are_not_objects_are_rejected_each() -> None:
    out = service().handle(INGEST_BATCH, json.dumps([1, item("d1", 0), None, "x"]).encode())
    assert [t for t, _, _ in out].count("medsec/events/~unidentified") == 3
    assert [t for t, _, _ in out if t.endswith("/json")] == ["Pico/d1/json"]
