"""FHIR R4 export of a device's readings (pure: rows in, a Bundle as a dict out).

Per reading two Observations: body temperature (LOINC 8310-5, UCUM Cel, category vital-signs),
and one "device channels" Observation whose six components are the other channels. Those have
no standard code that says what they are (a raw pulse-sensor ADC voltage, MPU6050 axes, chip
temperatures), so they carry medsec's own codes (CHANNEL_SYSTEM) with UCUM units: honest local
codes rather than borrowed ones that would mean something else to a receiving system.
The subject is a Device resource for the device; which patient wears it is the site's mapping
(docs/history.md), not medsec's.
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from services.common.v1 import FIELDS
from services.history.readings import Row

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CHANNEL_SYSTEM = "urn:medsec:fhir:channel"  # medsec's own codes (docs/history.md)
DEVICE_SYSTEM = "urn:medsec:device"  # Device.identifier: the gateway's device id
READING_SYSTEM = "urn:medsec:reading"  # Observation.identifier: device/ts/seq, stable per reading
_NS = uuid.UUID("6f1c3a52-8f0e-4b59-9d1e-2f7f0c9b8a11")  # fullUrls are uuid5 under this: stable

# field -> (code, display, UCUM unit); index into Row.values follows services.common.v1.FIELDS.
BODY_TEMPERATURE = ("8310-5", "Body temperature", "Cel")
CHANNELS: dict[str, tuple[str, str, str]] = {
    "PulseSig": ("pulse-signal", "Pulse sensor signal (ADC voltage)", "V"),
    "Acel_x": ("accel-x", "Acceleration, x axis", "[g]"),
    "Acel_y": ("accel-y", "Acceleration, y axis", "[g]"),
    "Acel_z": ("accel-z", "Acceleration, z axis", "[g]"),
    "TempMcu": ("temp-mcu", "Microcontroller (RP2040) temperature", "Cel"),
    "TempMpu": ("temp-mpu", "Motion sensor (MPU6050) die temperature", "Cel"),
}
PANEL = ("device-channels", "medsec device channels")


def _instant(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _urn(*parts: object) -> str:
    return f"urn:uuid:{uuid.uuid5(_NS, '/'.join(map(str, parts)))}"


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def device_resource(device: str) -> dict[str, Any]:
    return {
        "resourceType": "Device",
        "identifier": [{"system": DEVICE_SYSTEM, "value": device}],
        "status": "active",
        "deviceName": [{"name": device, "type": "user-friendly-name"}],
        "type": {"text": "medsec wearable sensor (Raspberry Pi Pico)"},
    }


def observations(row: Row, subject: str) -> list[dict[str, Any]]:
    """The two Observations of one reading (see the module text)."""
    value = dict(zip(FIELDS, row.values, strict=True))
    key = f"{row.device}/{row.ts!r}/{'' if row.seq is None else row.seq}"
    when = _instant(row.ts)
    ref = {"reference": subject}
    code, display, unit = BODY_TEMPERATURE
    temp = {
        "resourceType": "Observation",
        "identifier": [{"system": READING_SYSTEM, "value": f"{key}/Temp"}],
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": "vital-signs", "display": "Vital Signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
        "subject": ref, "device": ref, "effectiveDateTime": when,
        "valueQuantity": _quantity(value["Temp"], unit),
    }
    panel = {
        "resourceType": "Observation",
        "identifier": [{"system": READING_SYSTEM, "value": f"{key}/channels"}],
        "status": "final",
        "code": {"coding": [{"system": CHANNEL_SYSTEM, "code": PANEL[0], "display": PANEL[1]}],
                 "text": PANEL[1]},
        "subject": ref, "device": ref, "effectiveDateTime": when,
        "component": [
            {"code": {"coding": [{"system": CHANNEL_SYSTEM, "code": c, "display": d}], "text": d},
             "valueQuantity": _quantity(value[field], u)}
            for field, (c, d, u) in CHANNELS.items()
        ],
    }
    return [temp, panel]


def bundle(device: str, rows: Sequence[Row], self_url: str, next_url: str | None,
           now: float) -> dict[str, Any]:
    """A Bundle (type collection) of the Device and each reading's Observations."""
    subject = _urn("device", device)
    entries = [{"fullUrl": subject, "resource": device_resource(device)}]
    for row in rows:
        for i, obs in enumerate(observations(row, subject)):
            entries.append({"fullUrl": _urn("obs", obs["identifier"][0]["value"], i), "resource": obs})
    links = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return {"resourceType": "Bundle", "type": "collection", "timestamp": _instant(now),
            "link": links, "entry": entries}
