"""The publisher's logic, without any MQTT: bus message in, messages to publish out.

The transport (`transport.py`) feeds it what arrives on the internal bus and
publishes what it returns; tests can drive it directly.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from services.common import fastjson
from services.common.bus import EVENTS, INGEST_BATCH, UNIDENTIFIED
from services.common.config import valid_device_id
from services.common.logs import kv
from services.common.readings import ReadingError
from services.publisher.addresses import LastAddresses
from services.publisher.dedup import DuplicateWindow
from services.publisher.topics import (
    EVENTS_PREFIX,
    INGEST_PREFIX,
    MAX_BUS_MESSAGE,
    PROTOCOLS,
    BusMessageError,
    Ingest,
    Publish,
    alert_message,
    device_from_topic,
    parse_batch,
    parse_ingest,
    parse_reading,
    public_messages,
    status_message,
)


class Counters:
    """What the metrics file reports. Updated and read on the event loop's thread only (the
    metrics writer is a task of the same loop), so without a lock: a lock per reading was a
    cost for nothing (issue 13)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.duplicates = 0
        self.status_updates = 0
        self.alerts = 0
        self.published = 0
        self.rejected: Counter[str] = Counter()

    def snapshot(self) -> dict[str, object]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "status_updates": self.status_updates,
            "alerts": self.alerts,
            "published": self.published,
            "rejected": dict(self.rejected),
        }


class PublisherService:
    def __init__(
        self,
        log: logging.Logger,
        dedup: DuplicateWindow | None = None,
        clock: Callable[[], float] = time.time,
        addresses: LastAddresses | None = None,
    ) -> None:
        self.log = log
        # `is None`, not `or`: both have a length, so an empty one passed in is false.
        self.dedup = DuplicateWindow() if dedup is None else dedup
        self.addresses = LastAddresses() if addresses is None else addresses
        self.clock = clock
        self.counters = Counters()

    def handle(self, topic: str, payload: bytes) -> list[Publish]:
        """Everything to publish for one bus message (possibly nothing). Never raises for bad input."""
        if topic == INGEST_BATCH:
            out = self.on_batch(payload)
        elif topic.startswith(INGEST_PREFIX):
            out = self.on_ingest(topic, payload)
        elif topic.startswith(EVENTS_PREFIX):
            out = self.on_event(topic, payload)
        else:
            out = []
        self.counters.published += len(out)
        return out

    def on_ingest(self, topic: str, payload: bytes) -> list[Publish]:
        try:
            reading = parse_ingest(topic, payload)
        except (BusMessageError, ReadingError) as exc:
            device = device_from_topic(topic, INGEST_PREFIX)
            return [self._reject(device, _load_context(payload), exc.reason, exc.detail)]
        return self._publish(reading)

    def on_batch(self, payload: bytes) -> list[Publish]:
        """Each reading of a batch in order, as if each had come alone: a bad one is rejected by
        itself (its event), the others are published."""
        try:
            items = parse_batch(payload)
        except BusMessageError as exc:
            return [self._reject(None, None, exc.reason, exc.detail)]
        out: list[Publish] = []
        for item in items:
            try:
                reading = parse_reading(item)
            except (BusMessageError, ReadingError) as exc:
                device = item.get("device") if isinstance(item, dict) else None
                out.append(self._reject(device if isinstance(device, str) else None, item, exc.reason,
                                        exc.detail))
                continue
            out += self._publish(reading)
        return out

    def _publish(self, reading: Ingest) -> list[Publish]:
        if self.dedup.seen(reading.device, reading.dedup_key):
            self.counters.duplicates += 1
            return []
        self.counters.accepted += 1
        return public_messages(reading, self.addresses.changed(reading.device, (reading.src, reading.gw)))

    def on_event(self, topic: str, payload: bytes) -> list[Publish]:
        message = status_message(topic, payload)
        if message is not None:
            self.counters.status_updates += 1
            return [message]
        alert = alert_message(topic, payload)
        if alert is not None:
            self.counters.alerts += 1
            self.log.warning(kv(event="alert", device=device_from_topic(topic, EVENTS_PREFIX) or "-",
                                topic=alert[0]))
            return [alert]
        return []

    def _reject(self, device: str | None, context: object, reason: str, detail: str) -> Publish:
        """One log line, one counter, and a `rejected` event; never the reading itself.
        `context` is the message's decoded object, if any: its source address and protocol."""
        if device is None or not valid_device_id(device):
            device = None
        src, protocol = _context(context)
        self.counters.rejected[reason] += 1
        self.log.warning(kv(event="rejected", device=device or UNIDENTIFIED, reason=reason, detail=detail))
        event = {
            "event": "rejected", "device": device, "reason": reason, "detail": detail,
            "ts": self.clock(), "src": src, "protocol": protocol,
        }
        topic_out = EVENTS.format(device=device or UNIDENTIFIED)
        return topic_out, fastjson.dumps(event), False


def _load_context(payload: bytes) -> object:
    """A rejected message's decoded JSON when it has any (for its source and protocol), else None."""
    if len(payload) > MAX_BUS_MESSAGE:
        return None
    try:
        return fastjson.loads(payload)
    except ValueError:  # orjson: bad UTF-8 and nesting too deep too
        return None


def _context(obj: object) -> tuple[list | None, str | None]:
    """The source address and protocol of a rejected message, when it has sane ones (for the event)."""
    if not isinstance(obj, dict):
        return None, None
    src = obj.get("src")
    if not (isinstance(src, list) and len(src) == 2 and isinstance(src[0], str) and len(src[0]) <= 64
            and isinstance(src[1], int)):
        src = None
    protocol = obj.get("protocol")
    return src, protocol if protocol in PROTOCOLS else None
