"""The MQTT side of the publisher: a persistent session on the internal bus (asyncio, mqttwire).

Delivery guarantee: the publishes of a reading and then the PUBACK of the
incoming message go out in one write on one TCP connection. The broker
handles a connection's packets in order, so it can only have seen the
acknowledgement if it has seen every publish before it; a crash at any
moment leaves the reading either fully handed over or unacknowledged in the
broker's session queue (fixed client id, clean session off), which
redelivers it to the next run. Publishes the broker has not acknowledged are
kept and sent again (DUP) after a reconnect. The window in which a crash
makes a reading appear twice is thus one write, not a broker round trip.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from services.common.config import Config
from services.common.logs import kv
from services.common.state import mqtt_password
from services.publisher import mqttwire as wire
from services.publisher.service import PublisherService

CLIENT_ID = "medsec-publisher"
SUBSCRIPTIONS = [("medsec/ingest/+", 1), ("medsec/events/+", 1)]
KEEPALIVE = 15


class BusTransport:
    def __init__(self, config: Config, service: PublisherService, log: logging.Logger,
                 client_id: str = CLIENT_ID, subscriptions: list[tuple[str, int]] | None = None) -> None:
        self.config = config
        self.service = service
        self.log = log
        self.client_id = client_id
        self.subscriptions = subscriptions or SUBSCRIPTIONS
        self.connected = False
        self.stopping = False
        self._password = mqtt_password(config, "publisher")
        self._next_mid = 0
        # Outgoing publishes the broker has not acknowledged yet: mid -> (topic, payload, retain).
        self._outgoing: dict[int, tuple[str, bytes, bool]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._out = bytearray()  # packets to write after the current batch of input

    # --- lifecycle ---
    async def run(self, stop: asyncio.Event) -> None:
        """Connect, serve, reconnect with back-off, until `stop` is set; then drain and disconnect."""
        backoff = 0.05
        host = self.config.broker_host
        while not stop.is_set():
            try:
                async with asyncio.timeout(5):
                    reader, writer = await asyncio.open_connection(host, self.config.mqtt_port)
            except (OSError, TimeoutError) as exc:
                self.log.warning(kv(event="bus_connect_failed", error=exc))
                await _wait(stop, backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, 2.0)
                continue
            session = asyncio.create_task(self._session(reader, writer, stop))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({session, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper.done() and not session.done():
                await self._drain(session, writer)
            stopper.cancel()
            await asyncio.wait({session}, timeout=5)  # bounded: never hang the shutdown on a lost cancel
            if session.done() and not session.cancelled() and session.exception() is None and \
                    session.result():
                backoff = 0.05  # the session was up: reconnect quickly
            writer.close()
            self.connected = False
            if not stop.is_set():
                self.log.warning(kv(event="bus_disconnected"))
                await _wait(stop, backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, 2.0)

    async def _drain(self, session: asyncio.Task, writer: asyncio.StreamWriter, timeout: float = 5.0) -> None:
        """SIGTERM: take no new messages, wait for the broker to acknowledge what is in flight, disconnect."""
        self.stopping = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        with contextlib.suppress(OSError, ConnectionError):
            writer.write(wire.DISCONNECT_PACKET)
            await writer.drain()
        session.cancel()

    @property
    def drained(self) -> bool:
        return not self._outgoing

    # --- one connection ---
    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       stop: asyncio.Event) -> bool:
        """Returns True if the connection was established (for the back-off), False if refused."""
        writer.write(wire.connect(self.client_id, "publisher", self._password, clean_session=False,
                                  keepalive=KEEPALIVE))
        buf = bytearray()
        try:
            async with asyncio.timeout(10):
                packet = await self._next_packet(reader, buf)
        except (TimeoutError, OSError, ConnectionError, wire.WireError) as exc:
            self.log.warning(kv(event="bus_connect_failed", error=exc or type(exc).__name__))
            return False
        if packet is None or packet.kind != wire.CONNACK:
            self.log.warning(kv(event="bus_connect_failed", error="no CONNACK"))
            return False
        session_present, code = wire.parse_connack(packet)
        if code != 0:
            self.log.error(kv(event="bus_connect_failed", reason=f"CONNACK code {code}"))
            return False
        self.connected = True
        self.log.info(kv(event="bus_connected", session_present=int(session_present)))
        for mid, (topic, payload, retain) in self._outgoing.items():
            self._out += wire.publish(topic, payload, 1, retain, mid, dup=True)
        self._check_idle()
        self._out += wire.subscribe(self._mid(), self.subscriptions)
        await self._flush(writer)
        pinger = asyncio.create_task(self._ping(writer))
        try:
            while True:
                async with asyncio.timeout(KEEPALIVE * 2):  # not wait_for: no task per read
                    data = await reader.read(65536)
                if not data:
                    return True
                buf += data
                pos = 0
                while True:
                    if (mid := wire.puback_at(buf, pos)) is not None:
                        self._on_puback(mid)
                        pos += 4
                        continue
                    found = wire.read_packet(buf, offset=pos)
                    if found is None:
                        break
                    packet, used = found
                    pos += used
                    self._handle(packet)
                del buf[:pos]
                await self._flush(writer)
        except (TimeoutError, OSError, ConnectionError, wire.WireError) as exc:
            self.log.warning(kv(event="bus_connection_lost", error=exc or type(exc).__name__))
            return True
        finally:
            pinger.cancel()

    async def _next_packet(self, reader: asyncio.StreamReader, buf: bytearray) -> wire.Packet | None:
        while (found := wire.read_packet(buf)) is None:
            data = await reader.read(65536)
            if not data:
                return None
            buf += data
        packet, used = found
        del buf[:used]
        return packet

    async def _flush(self, writer: asyncio.StreamWriter) -> None:
        if self._out:
            writer.write(bytes(self._out))
            self._out.clear()
            await writer.drain()

    async def _ping(self, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                await asyncio.sleep(KEEPALIVE / 2)
                writer.write(wire.PINGREQ_PACKET)

    def _mid(self) -> int:
        for _ in range(65535):
            self._next_mid = self._next_mid % 65535 + 1
            if self._next_mid not in self._outgoing:
                return self._next_mid
        raise RuntimeError("65535 publishes unacknowledged")

    def _check_idle(self) -> None:
        if self._outgoing:
            self._idle.clear()
        else:
            self._idle.set()

    # --- packets from the broker ---
    def _handle(self, packet: wire.Packet) -> None:
        if packet.kind == wire.PUBLISH:
            self._on_publish(wire.parse_publish(packet))
        elif packet.kind == wire.PUBACK:
            self._on_puback(wire.parse_mid(packet))
        elif packet.kind == wire.SUBACK:
            _, codes = wire.parse_suback(packet)
            if any(code >= 0x80 for code in codes):
                self.log.error(kv(event="bus_subscribe_failed", codes=",".join(map(str, codes))))
            else:
                self.log.info(kv(event="bus_subscribed", topics=",".join(t for t, _ in self.subscriptions)))

    def _on_publish(self, msg: wire.Publish) -> None:
        if self.stopping:
            return  # left unacknowledged: the broker redelivers it to the next run
        try:
            out = self.service.handle(msg.topic, msg.payload)
        except Exception:  # a bug must not kill the connection; the reading stays unacknowledged
            self.log.exception(kv(event="handler_error", topic=msg.topic[:100]))
            return
        for topic, payload, retain in out:
            mid = self._mid()
            self._outgoing[mid] = (topic, payload, retain)
            self._out += wire.publish(topic, payload, 1, retain, mid)
        if out:
            self._idle.clear()
        if msg.qos:
            self._out += wire.puback(msg.mid)  # after the publishes, in the same write: see the docstring

    def _on_puback(self, mid: int) -> None:
        if self._outgoing.pop(mid, None) is not None and not self._outgoing:
            self._idle.set()


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
