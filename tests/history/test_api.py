"""The history read API on keyadmin (readings JSON/CSV, per-minute, FHIR) on both store backends."""
from __future__ import annotations

import csv
import io
import statistics

import pytest

from services.common.v1 import FIELDS
from services.history.readings import Row
from tests.history.support import START, get, rows_for


def test_json_pages_return_every_reading_in_range_once(client, history):
    rows = rows_for("bed-12", 500)
    history.add(rows + rows_for("bed-13", 50))
    lo, hi = START + 10, START + 200  # rows 20 .. 399
    seen, cursor = [], None
    while True:
        answer = get(client, "/devices/bed-12/readings", **{"from": lo, "to": hi, "limit": 64},
                     **({"cursor": cursor} if cursor else {}))
        assert answer.status_code == 200, answer.json
        body = answer.json
        assert body["device"] == "bed-12" and body["step"] == "raw"
        seen += body["items"]
        cursor = body["next"]
        if cursor is None:
            break
    expected = [r for r in rows if lo <= r.ts < hi]
    assert len(seen) == len(expected) == 380
    for item, row in zip(seen, expected, strict=True):
        assert item["ts"] == row.ts and item["seq"] == row.seq
        assert [item[f] for f in FIELDS] == list(row.values)
        assert all(isinstance(item[f], float) for f in FIELDS)


def test_csv_has_a_header_and_the_same_rows(client, history):
    rows = rows_for("csv-dev", 130)
    history.add(rows)
    lines, cursor = [], None
    while True:
        answer = get(client, "/devices/csv-dev/readings", format="csv", limit=50,
                     **{"from": START, "to": START + 1000}, **({"cursor": cursor} if cursor else {}))
        assert answer.status_code == 200
        assert answer.mimetype == "text/csv"
        table = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
        assert answer.get_data(as_text=True).splitlines()[0] == ",".join(["ts", "seq", "protocol", *FIELDS])
        lines += table
        cursor = answer.headers.get("X-Next-Cursor")
        if cursor is None:
            break
    assert len(lines) == 130
    for line, row in zip(lines, rows, strict=True):
        assert float(line["ts"]) == row.ts
        assert line["seq"] == ("" if row.seq is None else str(row.seq))
        assert [float(line[f]) for f in FIELDS] == list(row.values)


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_minutes_match_the_raw_rows(client, history, fmt):
    rows = rows_for("agg-dev", 400)  # 200 s: minutes 0..3, the last partial
    history.add(rows)
    answer = get(client, "/devices/agg-dev/readings", step="1m", format=fmt,
                 **{"from": START, "to": START + 3600})
    assert answer.status_code == 200
    if fmt == "json":
        items = answer.json["items"]
    else:
        items = [{k: float(v) for k, v in line.items()}
                 for line in csv.DictReader(io.StringIO(answer.get_data(as_text=True)))]
    assert [i["ts"] for i in items] == [START + 60 * k for k in range(4)]
    for item in items:
        members = [r for r in rows if item["ts"] <= r.ts < item["ts"] + 60]
        assert item["n"] == len(members)
        for k, name in enumerate(FIELDS):
            col = [r.values[k] for r in members]
            assert item[name] == pytest.approx(statistics.fmean(col))
            assert item[f"{name}_min"] == min(col) and item[f"{name}_max"] == max(col)


@pytest.mark.parametrize("params,message", [
    ({"from": "yesterday"}, "from must be a number"),
    ({"to": "nan"}, "to must be unix seconds"),
    ({"from": "-5"}, "from must be unix seconds"),
    ({"from": "200", "to": "100"}, "from must not be after to"),
    ({"step": "5m"}, "step must be one of raw, 1m"),
    ({"format": "xml"}, "format must be one of json, csv"),
    ({"limit": "0"}, "limit must be an integer"),
    ({"limit": "100000"}, "limit must be an integer"),
    ({"limit": "ten"}, "limit must be an integer"),
    ({"cursor": "garbage"}, "cursor is not one this API gave"),
    ({"cursor": "rinf_1"}, "cursor is not one this API gave"),
    ({"cursor": "m12", "step": "raw"}, "cursor is not one this API gave"),
    ({"cursor": "r1_2", "step": "1m"}, "cursor is not one this API gave"),
])
def test_bad_queries_get_400_with_the_reason(client, params, message):
    answer = get(client, "/devices/pico-1/readings", **params)
    assert answer.status_code == 400
    assert message in answer.json["error"]


@pytest.mark.parametrize("device", ["..", "a b", "x" * 65, ".hidden"])
def test_bad_device_ids_get_400(client, device):
    for path in ("readings", "fhir"):
        answer = get(client, f"/devices/{device}/{path}")
        assert answer.status_code in (400, 404), (device, path)


def test_default_range_is_the_last_hour(client, history):
    import time

    now = time.time()
    history.add([Row("recent", now - 7200, 1, "v2", rows_for("x", 1)[0].values),
                 Row("recent", now - 60, 2, "v2", rows_for("x", 1)[0].values)])
    items = get(client, "/devices/recent/readings").json["items"]
    assert [i["seq"] for i in items] == [2]


def test_no_token_no_history(client):
    assert client.get("/api/v1/devices/pico-1/readings").status_code == 401
    assert client.get("/api/v1/devices/pico-1/fhir").status_code == 401
