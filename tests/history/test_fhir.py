"""The FHIR export: a Bundle that the fhir.resources R4B models accept, with the documented codes.

fhir.resources 7+ carries R5 at its root and R4B (4.3) as a package; R4B's Bundle, Observation
and Device are R4's for every element this export uses."""
from __future__ import annotations

import json

import pytest

from services.common.v1 import FIELDS
from services.history import fhir
from tests.history.support import READ, START, get, rows_for

R4B = pytest.importorskip("fhir.resources.R4B.bundle")


def validate(doc: dict) -> object:
    return R4B.Bundle.model_validate(doc)


def test_bundle_of_a_range_validates_and_carries_every_reading(client, history):
    rows = rows_for("bed_7", 120)  # an id with "_", which a FHIR id may not hold
    history.add(rows)
    entries, url = [], f"/api/v1/devices/bed_7/fhir?from={START}&to={START + 3600}&limit=50"
    pages = 0
    while url:
        answer = client.get(url, headers={"Authorization": f"Bearer {READ}"})
        assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
        assert answer.mimetype == "application/fhir+json"
        doc = json.loads(answer.get_data(as_text=True))
        validate(doc)
        assert doc["resourceType"] == "Bundle" and doc["type"] == "collection"
        device = doc["entry"][0]
        assert device["resource"]["resourceType"] == "Device"
        assert device["resource"]["identifier"] == [{"system": fhir.DEVICE_SYSTEM, "value": "bed_7"}]
        for entry in doc["entry"][1:]:
            assert entry["resource"]["subject"]["reference"] == device["fullUrl"]
        entries += doc["entry"][1:]
        nxt = [link["url"] for link in doc["link"] if link["relation"] == "next"]
        url = nxt[0].split("localhost", 1)[1] if nxt else None
        pages += 1
    assert pages == 3
    assert len(entries) == 2 * len(rows)
    assert len({e["fullUrl"] for e in entries}) == len(entries)
    temps = [e["resource"] for e in entries if e["resource"]["code"]["coding"][0]["code"] == "8310-5"]
    assert len(temps) == len(rows)
    for obs, row in zip(temps, rows, strict=True):
        assert obs["code"]["coding"][0]["system"] == "http://loinc.org"
        assert obs["category"][0]["coding"][0]["code"] == "vital-signs"
        assert obs["valueQuantity"] == {"value": row.values[FIELDS.index("Temp")], "unit": "Cel",
                                        "system": "http://unitsofmeasure.org", "code": "Cel"}
        assert obs["status"] == "final"


def test_every_channel_is_a_component_with_its_unit(history):
    row = rows_for("d", 1)[0]
    temp, panel = fhir.observations(row, "urn:uuid:00000000-0000-0000-0000-000000000000")
    codes = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in panel["component"]}
    assert set(codes) == {c for c, _, _ in fhir.CHANNELS.values()}
    for name, (code, _, unit) in fhir.CHANNELS.items():
        assert codes[code] == {"value": row.values[FIELDS.index(name)], "unit": unit,
                               "system": fhir.UCUM, "code": unit}
    doc = fhir.bundle("d", [row], "http://x/fhir", None, START)
    validate(doc)
    assert temp["effectiveDateTime"] == "2027-01-15T08:00:00.000Z"


def test_an_empty_range_is_a_bundle_with_the_device_only(client):
    answer = get(client, "/devices/nothing-here/fhir", **{"from": 0, "to": 10})
    doc = json.loads(answer.get_data(as_text=True))
    validate(doc)
    assert [e["resource"]["resourceType"] for e in doc["entry"]] == ["Device"]
