"""The proxy's side of the internal bus: readings and events out (QoS 1), key events in.

Readings accepted in one turn of the event loop go out as one bus message (issue 13): a lone
reading on `medsec/ingest/<device>`, several (any devices, in order) as a JSON array on
`medsec/ingest/~batch`, at most MAX_BATCH_READINGS / MAX_BATCH_BYTES each. Batching waits for
no timer: under load, auth's answers arrive together and so do the readings they complete;
a lone reading leaves at once. The batch's PUBACK completes every reading's future, so a v2
device's ack still goes out only once the bus holds its reading; a batch the broker has not
acknowledged is sent again whole after a reconnect (the publisher drops the duplicates). An
event first sends the readings before it, so the bus keeps the proxy's order.

Bounded both ways: at most `max_readings` readings may wait for a PUBACK (then
new readings are refused with bus_unavailable rather than queued without end),
and at most `max_events` events (then events are dropped and counted; the default
leaves room for a disconnect event of every connection at shutdown).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from services.common import bus, fastjson
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
    return fastjson.dumps({
        "device": device, "ts": ts, "seq": seq, "gen": gen, "protocol": protocol, "values": values,
        "src": list(src), "gw": list(gw), "uid": uid,
    })


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
    return fastjson.dumps(doc)


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
        # Readings of this loop turn not yet handed to the client: payloads, their topic, one future.
        self._batch: list[bytes] = []
        self._batch_topic = ""
        self._batch_bytes = 0
        self._batch_future: asyncio.Future[None] | None = None
        self._batch_started = 0.0
        # A clean session: key events matter only while connected (a revocation also closes
        # connections through auth); readings in flight are resent after a reconnect anyway.
        # The batch joins the client's write of the same turn (a new device's connect event and
        # its first reading: one write, not two loop turns apart).
        self.client = MqttClient(
            config.broker_host, config.mqtt_port, client_id, "proxy", mqtt_password(config, "proxy"),
            subscriptions=[(bus.KEY_EVENTS, 1)], on_message=self._on_message, log=log,
            before_flush=self._send_batch, socket_path=config.broker_socket,
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
        """The future the broker's PUBACK of the bus message that carries this reading completes."""
        if self.readings_waiting >= self.max_readings:
            raise BusUnavailable(f"{self.readings_waiting} readings already wait for the broker")
        if (len(self._batch) >= bus.MAX_BATCH_READINGS
                or self._batch_bytes + len(payload) + 1 > bus.MAX_BATCH_BYTES):
            self._send_batch()
        if self._batch_future is None:
            self._batch_future = self.loop.create_future()
            self._batch_topic = bus.INGEST.format(device=device)
            self._batch_started = time.perf_counter()
            self.loop.call_soon(self._send_batch)
        self._batch.append(payload)
        self._batch_bytes += len(payload) + 1
        self.readings_waiting += 1
        return self._batch_future

    def _send_batch(self) -> None:
        """Hand the readings gathered so far to the client as one bus message."""
        batch, future, started = self._batch, self._batch_future, self._batch_started
        if future is None:
            return
        self._batch, self._batch_bytes, self._batch_future = [], 0, None

        def settled(f: asyncio.Future[None]) -> None:
            # The batch's readings, counted once for all (a callback each was a cost per reading).
            self.readings_waiting -= len(batch)
            if not f.cancelled() and f.exception() is None:
                self.metrics.readings_accepted += len(batch)
                self.metrics.observe(self.metrics.publish, time.perf_counter() - started, len(batch))

        future.add_done_callback(settled)
        if len(batch) == 1:
            sent = self.client.publish(self._batch_topic, batch[0])
        else:
            sent = self.client.publish(bus.INGEST_BATCH, b"[" + b",".join(batch) + b"]")
        self.metrics.bus_messages += 1

        def relay(f: asyncio.Future[None]) -> None:
            if future.done():
                return
            if f.cancelled():
                future.cancel()
            elif f.exception() is not None:
                future.set_exception(f.exception())  # type: ignore[arg-type]
            else:
                future.set_result(None)

        sent.add_done_callback(relay)

    def publish_event(self, device: str | None, payload: bytes) -> None:
        self._send_batch()  # the readings accepted before this event go first
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
        self._send_batch()
        return await self.client.wait_idle(timeout)

    async def stop(self) -> None:
        """DISCONNECT after what is queued and stop reconnecting."""
        self._stop.set()
        if self._task is not None:
            await self._task

    # --- in ---
    def _on_message(self, message: Publish) -> None:
        try:
            event = fastjson.loads(message.payload)
        except ValueError:
            log.warning(kv(event="bad_key_event", detail="not JSON"))
            return
        if isinstance(event, dict):
            self._on_key_event(event)
