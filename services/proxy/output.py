"""The proxy's side of the internal bus: readings and events out (QoS 1), key events in.

Bounded both ways: at most `max_readings` readings may wait for a PUBACK (then
new readings are refused with bus_unavailable rather than queued without end),
and at most `max_events` events (then events are dropped and counted; the default
leaves room for a disconnect event of every connection at shutdown).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from services.common import bus
from services.common.config import Config
from services.common.logs import kv
from services.common.mqttclient import MqttClient
from services.common.mqttwire import Publish
from services.common.state import mqtt_password
from services.proxy.errors import BusUnavailable
from services.proxy.metrics import Metrics

log = logging.getLogger("medsec.proxy.bus")


def ingest_payload(device: str, values: dict[str, str], protocol: str, seq: int | None,
                   src: tuple[str, int], gw: tuple[str, int], uid: str, ts: float,
                   gen: int | None = None) -> bytes:
    """medsec/ingest/<device> (docs/architecture.md): values exactly as the device sent them.

    `gen` is the generation of the key the reading verified under (auth's answer): a v2 seq
    starts again after a rotation, so the publisher tells duplicates apart by (device, gen, seq).
    """
    return json.dumps({
        "device": device, "ts": ts, "seq": seq, "gen": gen, "protocol": protocol, "values": values,
        "src": list(src), "gw": list(gw), "uid": uid,
    }, separators=(",", ":")).encode()


def event_payload(event: str, device: str | None, reason: str | None, detail: str,
                  src: tuple[str, int] | None, protocol: str | None, ts: float,
                  peer: tuple[str, int] | None = None) -> bytes:
    """medsec/events/<device>; `peer` (duplicate_session only) is the other connection's address."""
    doc: dict[str, Any] = {
        "event": event, "device": device, "reason": reason, "detail": detail[:200], "ts": ts,
        "src": list(src) if src else None, "protocol": protocol,
    }
    if peer is not None:
        doc["peer"] = list(peer)
    return json.dumps(doc, separators=(",", ":")).encode()


class Output:
    def __init__(self, config: Config, client_id: str, loop: asyncio.AbstractEventLoop, metrics: Metrics,
                 on_key_event: Callable[[dict[str, Any]], None],
                 max_readings: int = 10_000, max_events: int = 50_000) -> None:
        self.loop = loop
        self.metrics = metrics
        self.max_readings = max_readings
        self.max_events = max_events
        self.readings_waiting = 0
        self.events_waiting = 0
        self._on_key_event = on_key_event
        # A clean session: key events matter only while connected (a revocation also closes
        # connections through auth); readings in flight are resent after a reconnect anyway.
        self.client = MqttClient(
            config.broker_host, config.mqtt_port, client_id, "proxy", mqtt_password(config, "proxy"),
            subscriptions=[(bus.KEY_EVENTS, 1)], on_message=self._on_message, log=log,
        )
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def subscribed(self) -> asyncio.Event:
        return self.client.subscribed

    @property
    def bus_up(self) -> bool:
        return self.client.connected

    def start(self) -> None:
        self._task = self.loop.create_task(self.client.run(self._stop, drain=1.0), name="bus")

    # --- out ---
    def publish_reading(self, device: str, payload: bytes) -> asyncio.Future[None]:
        if self.readings_waiting >= self.max_readings:
            raise BusUnavailable(f"{self.readings_waiting} readings already wait for the broker")
        future = self.client.publish(bus.INGEST.format(device=device), payload)
        self.readings_waiting += 1
        started = time.perf_counter()

        def done(f: asyncio.Future[None]) -> None:
            self.readings_waiting -= 1
            if not f.cancelled() and f.exception() is None:
                self.metrics.observe(self.metrics.publish, time.perf_counter() - started)

        future.add_done_callback(done)
        return future

    def publish_event(self, device: str | None, payload: bytes) -> None:
        if self.events_waiting >= self.max_events:
            self.metrics.events_dropped += 1
            return
        future = self.client.publish(bus.EVENTS.format(device=device or bus.UNIDENTIFIED), payload)
        self.events_waiting += 1

        def done(f: asyncio.Future[None]) -> None:
            self.events_waiting -= 1
            if not f.cancelled():
                f.exception()  # retrieved, so asyncio does not warn

        future.add_done_callback(done)

    async def flush(self, timeout: float) -> bool:
        """Wait until the broker acknowledged everything sent (shutdown)."""
        return await self.client.wait_idle(timeout)

    async def stop(self) -> None:
        """DISCONNECT after what is queued and stop reconnecting."""
        self._stop.set()
        if self._task is not None:
            await self._task

    # --- in ---
    def _on_message(self, message: Publish) -> None:
        try:
            event = json.loads(message.payload)
        except ValueError:
            log.warning(kv(event="bad_key_event", detail="not JSON"))
            return
        if isinstance(event, dict):
            self._on_key_event(event)
