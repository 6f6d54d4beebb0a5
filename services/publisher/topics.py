"""Pure mapping from internal bus messages to the public topic tree (no I/O).

`parse_ingest` checks a `medsec/ingest/<device>` payload's shape and values and
returns an `Ingest`; `public_messages` turns it into every (topic, payload,
retain) the public tree gets. Everything is checked before anything is
returned, so a caller that publishes the list never publishes half a reading.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple, TypeVar

from services.common import fastjson
from services.common.bus import MAX_BATCH_READINGS
from services.common.config import valid_device_id
from services.common.errors import ReasonError
from services.common.readings import ReadingError, validate
from services.common.v1 import FIELD_SET

INGEST_PREFIX = "medsec/ingest/"
EVENTS_PREFIX = "medsec/events/"
# A bus message is ~400 bytes; anything far larger is not from our proxy.
MAX_BUS_MESSAGE = 16 * 1024
MAX_BATCH_MESSAGE = MAX_BATCH_READINGS * MAX_BUS_MESSAGE

# The legacy topics (protocol v1, "Public topics"), relative to Pico/<id>/, and the field each carries.
VALUE_TOPICS: tuple[tuple[str, str], ...] = (
    ("Physiological_Data/Temperature", "Temp"),
    ("Physiological_Data/Pulse_Signal", "PulseSig"),
    ("Physiological_Data/Accelerometer/x", "Acel_x"),
    ("Physiological_Data/Accelerometer/y", "Acel_y"),
    ("Physiological_Data/Accelerometer/z", "Acel_z"),
    ("Internal_Device_Data/Temperature/MCU", "TempMcu"),
    ("Internal_Device_Data/Temperature/MPU", "TempMpu"),
)
_VALUE_ENDINGS = tuple("/" + sub for sub, _ in VALUE_TOPICS)
PROTOCOLS = ("v1", "v2")
T = TypeVar("T")

STATUS_EVENTS = {"connect": "online", "disconnect": "offline"}
# Proxy events the dashboards must see as alerts: event -> (rule, state), on Pico/<id>/alert.
ALERT_EVENTS = {"duplicate_session": ("duplicate_session", "alert"),
                "duplicate_session_end": ("duplicate_session", "clear")}

Publish = tuple[str, bytes, bool]  # (topic, payload, retain)


class BusMessageError(ReasonError, ValueError):
    """A bus message the publisher refuses. `reason` is a short stable code (logs, events, metrics)."""


class Ingest(NamedTuple):  # not a frozen dataclass: built per reading, in a third of the time
    """One validated reading from the internal bus."""

    device: str
    ts: float
    seq: int | None
    gen: int | None  # generation of the device key the reading verified under (null: unknown)
    protocol: str
    values: dict[str, str]  # the seven strings exactly as the device sent them
    numbers: dict[str, float]  # the same values as numbers (validated)
    src: tuple[str, int]
    gw: tuple[str, int]
    uid: str | None

    @property
    def dedup_key(self) -> tuple[object, ...]:
        """v2 readings carry a sequence number, which starts again under a rotated key: (gen, seq).
        v1 readings are told apart by the proxy's uid."""
        return ("seq", self.gen, self.seq) if self.seq is not None else ("uid", self.uid)


def device_from_topic(topic: str, prefix: str) -> str | None:
    """The device level of `<prefix><device>`, or None when the topic is not of that form."""
    if not topic.startswith(prefix):
        return None
    device = topic[len(prefix):]
    return device if device and "/" not in device else None


def _bad(detail: str) -> BusMessageError:
    return BusMessageError("bad_bus_message", detail)


def _load_object(payload: bytes) -> dict:
    if len(payload) > MAX_BUS_MESSAGE:
        raise _bad(f"payload of {len(payload)} bytes exceeds {MAX_BUS_MESSAGE}")
    try:
        obj = fastjson.loads(payload)
    except ValueError:  # orjson: bad UTF-8 too
        raise _bad("payload is not JSON") from None
    if not isinstance(obj, dict):
        raise _bad("payload is not a JSON object")
    return obj


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# Exact types (`type(x) is int`, which also leaves out bool): a bus message is decoded JSON, and
# these checks run for every reading (issue 13: parse_reading was a fifth of the publisher's CPU).
def _count(value: object) -> bool:
    """None or a non-negative integer."""
    return value is None or (type(value) is int and value >= 0)


def _address(obj: dict, name: str) -> tuple[str, int]:
    value = obj.get(name)
    if type(value) is list and len(value) == 2:
        host, port = value
        if type(host) is str and 0 < len(host) <= 64 and type(port) is int and 0 <= port <= 65535:
            return host, port
    raise _bad(f"{name} must be [host, port]")


def parse_ingest(topic: str, payload: bytes) -> Ingest:
    """Check an ingest message completely. Raises BusMessageError (bad shape) or ReadingError (bad values)."""
    topic_device = device_from_topic(topic, INGEST_PREFIX)
    if topic_device is None or not valid_device_id(topic_device):
        raise _bad(f"topic {topic[:100]!r} does not name a valid device")
    obj = _load_object(payload)
    device = obj.get("device")
    if not valid_device_id(device):
        raise _bad("device is missing or not a valid device id")
    if device != topic_device:
        raise BusMessageError("device_mismatch", f"payload names {device!r}, topic names {topic_device!r}")
    return parse_reading(obj)


def parse_batch(payload: bytes) -> list[object]:
    """The items of a `medsec/ingest/~batch` message (each checked later by parse_reading, so one
    bad reading costs only itself). Raises BusMessageError when the message is not a batch."""
    if len(payload) > MAX_BATCH_MESSAGE:
        raise _bad(f"batch of {len(payload)} bytes exceeds {MAX_BATCH_MESSAGE}")
    try:
        items = fastjson.loads(payload)
    except ValueError:  # orjson: bad UTF-8 and nesting too deep too
        raise _bad("batch is not JSON") from None
    if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH_READINGS:
        raise _bad(f"batch must be a JSON array of 1 to {MAX_BATCH_READINGS} readings")
    return items


def parse_reading(obj: object) -> Ingest:
    """Check one reading object (an ingest message's, or a batch item). Raises like parse_ingest."""
    if not isinstance(obj, dict):
        raise _bad("reading is not a JSON object")
    device = obj.get("device")
    if not valid_device_id(device):
        raise _bad("device is missing or not a valid device id")
    ts = obj.get("ts")
    if type(ts) not in (float, int) or not 0 <= ts < math.inf:  # NaN fails the comparison too
        raise _bad("ts must be a non-negative number")
    seq, gen = obj.get("seq"), obj.get("gen")
    if not _count(seq):
        raise _bad("seq must be null or a non-negative integer")
    if not _count(gen):
        raise _bad("gen must be null or a non-negative integer")
    protocol = obj.get("protocol")
    if protocol not in PROTOCOLS:
        raise _bad(f"protocol must be one of {', '.join(PROTOCOLS)}")
    uid = obj.get("uid")
    if uid is not None and (type(uid) is not str or not 0 < len(uid) <= 128):
        raise _bad("uid must be a non-empty string")
    if seq is None and uid is None:
        raise _bad("a reading needs a seq or a uid")
    values = obj.get("values")
    if type(values) is not dict:
        raise _bad("values must be an object")
    if not FIELD_SET.issuperset(values):
        extra = sorted(set(values) - FIELD_SET)
        raise ReadingError("unknown_field", f"reading has unexpected fields {', '.join(extra)[:80]}")
    src = _address(obj, "src")
    gw = _address(obj, "gw")
    numbers = validate(values)  # ReadingError: missing_field, not_numeric, out_of_range
    # values has exactly the seven fields now (no other key, none missing)
    return Ingest(device, float(ts), seq, gen, protocol, values, numbers, src, gw, uid)


def json_payload(reading: Ingest) -> bytes:
    """`Pico/<id>/json`: one object per reading, numbers as numbers."""
    doc: dict[str, object] = {
        "device": reading.device, "ts": reading.ts, "seq": reading.seq, "protocol": reading.protocol,
    }
    doc.update(reading.numbers)
    return fastjson.dumps(doc)


def value_messages(reading: Ingest) -> list[Publish]:
    """What every reading publishes: the seven legacy value topics, then Pico/<id>/json."""
    base = f"Pico/{reading.device}/"
    out: list[Publish] = [(base + sub, reading.values[name].encode(), False) for sub, name in VALUE_TOPICS]
    out.append((base + "json", json_payload(reading), False))
    return out


def qos_for(topic: str, public_qos: int, legacy_qos: int) -> int:
    """The QoS a public message goes at: MEDSEC_LEGACY_QOS for the seven legacy value topics,
    MEDSEC_PUBLIC_QOS for the rest (json, status, alert, addresses, events)."""
    return legacy_qos if topic.endswith(_VALUE_ENDINGS) else public_qos


def address_messages(reading: Ingest) -> list[Publish]:
    """The four address topics, retained: they change only when the device connects anew
    (another source port, another gateway), so the publisher sends them only then and a
    dashboard that subscribes later still gets them."""
    base = f"Pico/{reading.device}/"
    return [
        (base + "Ip_address", reading.src[0].encode(), True),
        (base + "Port_address", str(reading.src[1]).encode(), True),
        (base + "Internal_Server/Ip_address", reading.gw[0].encode(), True),
        (base + "Internal_Server/Port_address", str(reading.gw[1]).encode(), True),
    ]


def public_messages(reading: Ingest, addresses: bool = True) -> list[Publish]:
    """Everything one reading publishes: the seven value topics, the four address topics (when
    `addresses`: the device's first reading, or its address changed), then Pico/<id>/json."""
    out = value_messages(reading)
    if addresses:
        out[-1:-1] = address_messages(reading)
    return out


def _device_event(topic: str, payload: bytes, meanings: Mapping[str, T]) -> tuple[str, dict, T] | None:
    """(device, event, its meaning) of a well-formed event about a valid device whose "event" is
    a key of meanings; None otherwise.

    Events of unidentified connections (`~unidentified`, not a valid device id) and
    malformed events are ignored: they must not invent a device.
    """
    device = device_from_topic(topic, EVENTS_PREFIX)
    if device is None or not valid_device_id(device) or len(payload) > MAX_BUS_MESSAGE:
        return None
    try:
        obj = fastjson.loads(payload)
    except ValueError:  # orjson: bad UTF-8 and nesting too deep too
        return None
    if not isinstance(obj, dict) or obj.get("device") != device:
        return None
    meaning = meanings.get(obj.get("event"))  # type: ignore[arg-type]
    if meaning is None:
        return None
    return device, obj, meaning


def alert_message(topic: str, payload: bytes) -> Publish | None:
    """The retained Pico/<id>/alert a duplicate_session(_end) event sets; None for other events.

    `{"device", "rule": "duplicate_session", "state": "alert"|"clear", "reason", "text", "src",
    "peer", "ts"}`: what the medsec alert node and the dashboard's Alerts page show.
    """
    found = _device_event(topic, payload, ALERT_EVENTS)
    if found is None:
        return None
    device, obj, kind = found
    ts = obj.get("ts")
    reason = obj.get("reason")
    detail = obj.get("detail")
    doc = {
        "device": device, "rule": kind[0], "state": kind[1],
        "reason": reason if isinstance(reason, str) and len(reason) <= 64 else None,
        "text": detail[:200] if isinstance(detail, str) else "",
        "src": _maybe_address(obj, "src"), "peer": _maybe_address(obj, "peer"),
        "ts": float(ts) if _is_number(ts) else None,
    }
    return f"Pico/{device}/alert", fastjson.dumps(doc), True


def _maybe_address(obj: dict, name: str) -> list | None:
    try:
        return list(_address(obj, name))
    except BusMessageError:
        return None


def status_message(topic: str, payload: bytes) -> Publish | None:
    """The retained Pico/<id>/status a connect or disconnect event sets; None for any other event."""
    found = _device_event(topic, payload, STATUS_EVENTS)
    if found is None:
        return None
    device, _, status = found
    return f"Pico/{device}/status", status.encode(), True
