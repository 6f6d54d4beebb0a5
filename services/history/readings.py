"""Pure parsing of a published reading (`Pico/<id>/json`) into a history row (no I/O).

The payload is services/publisher/topics.py `json_payload`: device, ts, seq, protocol and the
seven fields as numbers. Everything is checked before a row is returned, so nothing malformed
reaches the store.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from services.common.config import valid_device_id
from services.common.errors import ReasonError
from services.common.readings import RANGES
from services.common.v1 import FIELDS

TOPIC_PREFIX = "Pico/"
TOPIC_SUFFIX = "/json"
SUBSCRIPTION = "Pico/+/json"
MAX_PAYLOAD = 4096  # a reading is ~200 bytes
PROTOCOLS = ("v1", "v2")


class ReadingRefused(ReasonError, ValueError):
    """A published message that is not a storable reading; `reason` is a stable code."""


@dataclass(frozen=True)
class Row:
    """One reading as history stores it. Its identity is (device, ts, seq): see store.py."""

    device: str
    ts: float
    seq: int | None
    protocol: str
    values: tuple[float, ...]  # in FIELDS order

    def as_dict(self) -> dict[str, object]:
        doc: dict[str, object] = {"ts": self.ts, "seq": self.seq, "protocol": self.protocol}
        doc.update(zip(FIELDS, self.values, strict=True))
        return doc


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse(topic: str, payload: bytes) -> Row:
    """The row of one `Pico/<id>/json` message. Raises ReadingRefused (reason, detail)."""
    device = topic[len(TOPIC_PREFIX):-len(TOPIC_SUFFIX)] if (
        topic.startswith(TOPIC_PREFIX) and topic.endswith(TOPIC_SUFFIX)) else ""
    if not valid_device_id(device):
        raise ReadingRefused("bad_topic", f"topic {topic[:100]!r} does not name a device")
    if len(payload) > MAX_PAYLOAD:
        raise ReadingRefused("too_long", f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ReadingRefused("not_json", "payload is not JSON") from None
    if not isinstance(obj, dict):
        raise ReadingRefused("not_json", "payload is not a JSON object")
    if obj.get("device") != device:
        raise ReadingRefused("device_mismatch", "payload does not name the topic's device")
    ts = obj.get("ts")
    if not _number(ts) or ts < 0:
        raise ReadingRefused("bad_ts", "ts must be a non-negative number")
    seq = obj.get("seq")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**63):
        raise ReadingRefused("bad_seq", "seq must be null or a non-negative integer")
    protocol = obj.get("protocol")
    if protocol not in PROTOCOLS:
        raise ReadingRefused("bad_protocol", f"protocol must be one of {', '.join(PROTOCOLS)}")
    values = []
    for name in FIELDS:
        value = obj.get(name)
        if value is None:
            raise ReadingRefused("missing_field", f"reading lacks {name}")
        if not _number(value):
            raise ReadingRefused("not_numeric", f"{name} is not a number")
        low, high = RANGES[name]
        if not low <= value <= high:
            raise ReadingRefused("out_of_range", f"{name} outside [{low}, {high}]")
        values.append(float(value))
    return Row(device=device, ts=float(ts), seq=seq, protocol=protocol, values=tuple(values))
