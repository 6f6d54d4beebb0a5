"""The one asyncio MQTT 3.1.1 client of the async services (publisher, proxy, dispatch).

It only moves bytes and completes futures; the packets are services/common/mqttwire.py.

- QoS 1 or 2 out: `publish()` returns a future completed by the broker's PUBACK
  (QoS 1) or PUBCOMP (QoS 2); `send()` is the same without a future. Until then
  the message is kept and sent again after every reconnect (PUBLISH with DUP, or
  PUBREL once the broker has answered PUBREC), so nothing acknowledged to a
  caller is lost and nothing published is dropped while the broker is away.
  QoS 2 is what makes a resend after a broker restart exactly once: the broker
  keeps the packet ids of its session (persistence, clean_session=False) and
  forwards a message on PUBREL only once. If the broker comes back without the
  session, a released message is published again: a copy, never a loss.
- QoS 1 in (it subscribes at QoS 0 or 1; 2 is refused when the client is made):
  `on_message(msg)` runs first, then the PUBACK is written, after whatever the
  handler published, in the same write. A handler that raises
  (or a client that is stopping) leaves the message unacknowledged: with a
  persistent session (clean_session=False) the broker delivers it again. An
  async handler is awaited before the next packet is read, which is the
  backpressure: the broker keeps what the service has not taken.
- `window` (None: unbounded) caps the publishes written and not yet completed; the rest wait
  in order, and so does an incoming message's PUBACK written behind them (it must not reach the
  broker before the publishes its handler made). Brokers drop QoS 2 messages beyond their own
  in-flight limit instead of refusing them (Mosquitto: max_inflight_messages; EMQX:
  max_awaiting_rel), so a QoS 2 publisher must stay within it.
- `release_stored=True` (a persistent session that publishes at QoS 2): a process that ended
  between a broker's PUBREC and its PUBREL (crash, kill) leaves messages the broker stored and
  will not forward until released, and the new process does not know their packet ids. On its
  first connection with the session present it releases them all (PUBREL for every packet id)
  and publishes nothing until the broker has completed them (the ids would be
  confused): each such message is then forwarded once, never lost.
- `auto_ack=False` (history: acknowledge only what is stored): the handler only takes the
  message; the caller later calls `ack(mid, session)` with `session` read at delivery. An
  acknowledgement for an earlier connection is dropped (its packet id means nothing to the new
  one): the broker delivers that message again and the caller must tolerate the copy.
- One reconnect policy: jittered exponential back-off from `min_delay` to
  `max_delay`, back to `min_delay` after a connection that lasted STABLE s.
- Incoming messages wait, unacknowledged and in order, while `max_outgoing` of our publishes
  wait for the broker (its acknowledgements are still read): a handler never runs the
  packet ids out (issue 13).
- `gather_acks` (seconds, 0: off): with at least GATHER_IN_FLIGHT publishes unacknowledged, wait
  that long before reading again, so the broker's acknowledgements arrive in bulk. Under load a
  broker answers a publish or two per TCP segment; reading each as it comes cost the publisher a
  loop wake, a read and a write of PUBRELs per reading (a fifth of its CPU, issue 13). Below the
  threshold (a quiet bus, a device's first reading) it reads at once.
- `run(stop)`: when `stop` is set, take no new messages, wait up to `drain`
  seconds for the broker to acknowledge what is in flight, DISCONNECT.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path

from services.common import mqttwire as wire
from services.common.logs import kv

STABLE = 5.0  # seconds a connection must last before the back-off starts again from min_delay
MAX_IN_FLIGHT = 65535  # packet ids
# The in-flight limit medsec's brokers are configured with (Mosquitto max_inflight_messages, EMQX
# mqtt.max_awaiting_rel): the window of a QoS 2 publisher (see `window` above). 400, not 100: with
# the broker on its Unix socket, 100 json messages in flight capped the publisher (readings/s +10-15 %
# at 400 in rounds alternating on two stacks; 1,000 was no better, issue 13).
BROKER_INFLIGHT = 400
GATHER_IN_FLIGHT = 16  # see gather_acks
MessageHandler = Callable[[wire.Publish], Awaitable[None] | None]


class TopicTable(dict[str, tuple[int, bytes]]):
    """topic -> (its QoS by `qos_of`, its encoded field): what send_many needs of a topic, found
    with one dict lookup once the topic was seen (issue 13: the QoS rule and an LRU of encoded
    topics were ~0.4 us of each of the publisher's eight publishes a reading). The publisher's
    topics are its devices' eight; past `limit` of them the table starts again (8192 entries are
    about 2 MB)."""

    def __init__(self, qos_of: Callable[[str], int], limit: int = 8192) -> None:
        super().__init__()
        self._qos_of = qos_of
        self._limit = limit

    def __missing__(self, topic: str) -> tuple[int, bytes]:
        if len(self) >= self._limit:
            self.clear()
        entry = self[topic] = (self._qos_of(topic), wire.topic_field(topic))
        return entry


class MqttClient:
    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        username: str,
        password: str,
        *,
        clean_session: bool = True,
        keepalive: int = 15,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_message: MessageHandler | None = None,
        log: logging.Logger | None = None,
        min_delay: float = 0.05,
        max_delay: float = 2.0,
        connect_timeout: float = 5.0,
        auto_ack: bool = True,
        window: int | None = None,
        release_stored: bool = False,
        max_outgoing: int = MAX_IN_FLIGHT // 2,
        before_flush: Callable[[], None] | None = None,
        gather_acks: float = 0.0,
        socket_path: Path | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.socket_path = socket_path
        self.client_id = client_id
        self.username, self._password = username, password
        self.clean_session = clean_session
        self.keepalive = keepalive
        if any(qos not in (0, 1) for _, qos in subscriptions):
            # It acknowledges what it takes with PUBACK: a QoS 2 delivery would stall the session.
            raise ValueError("the client subscribes at QoS 0 or 1 only")
        self.subscriptions = list(subscriptions)
        self.on_message = on_message
        self.log = log or logging.getLogger("medsec.mqtt")
        self.min_delay, self.max_delay = min_delay, max_delay
        self.connect_timeout = connect_timeout
        self.auto_ack = auto_ack
        self.window = window
        self._unreleased = release_stored  # the release above is still to do
        self._releasing = 0  # its PUBCOMPs still to come
        # Incoming messages wait (unacknowledged, in order) while this many of our publishes wait
        # for the broker; its acknowledgements are still read. Issue 13: a handler that publishes
        # faster than the broker takes (the publisher under overload) ran out of packet ids otherwise.
        self.max_outgoing = max_outgoing
        # Called first when the packets of a loop turn are written: what it publishes joins them.
        self.before_flush = before_flush
        self.gather_acks = gather_acks
        self.session = 0  # counts connections; an ack names the one its message came on
        self.connected = False
        self.via = ""  # how the current or last connection reached the broker: "unix" or "tcp"
        self.stopping = False
        self.subscribed = asyncio.Event()
        # Sent (or to send) and not acknowledged: mid -> (topic, payload, retain, future or None, qos).
        self._outgoing: dict[int, tuple[str, bytes, bool, asyncio.Future[None] | None, int]] = {}
        self._released: set[int] = set()  # QoS 2 mids the broker stored (PUBREC): PUBREL sent
        # This connection: mids written and not completed, and what waits for the window, in order:
        # a mid to publish (DUP if written on an earlier connection: _resend) or a PUBACK packet.
        self._written: set[int] = set()
        self._backlog: collections.deque[int | bytes] = collections.deque()
        self._resend: set[int] = set()
        self._next_mid = 0
        self._sub_mid: int | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._not_handling = asyncio.Event()  # cleared while an async handler runs
        self._not_handling.set()
        self._out = bytearray()  # packets for the next write
        self._writer: asyncio.StreamWriter | None = None
        self._flush_pending = False

    # --- publishing (QoS 1 or 2) ---
    def publish(self, topic: str, payload: bytes, retain: bool = False, qos: int = 1) -> asyncio.Future[None]:
        """A future the broker's PUBACK (PUBCOMP) completes; ConnectionError if 65535 are in flight."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            self._queue(topic, payload, retain, future, qos)
        except ConnectionError as exc:
            future.set_exception(exc)
        return future

    def send(self, topic: str, payload: bytes, retain: bool = False, qos: int = 1) -> None:
        """publish() without a future: kept and resent the same way until the broker has it.

        QoS 0: written once, in order with the rest (behind what waits for the window), never
        kept: lost if the connection is."""
        self.send_many(((topic, payload, retain),), TopicTable(lambda _topic: qos))

    def send_many(self, messages: Iterable[tuple[str, bytes, bool]], topics: TopicTable) -> None:
        """send() each (topic, payload, retain) in order, at its QoS in `topics`: the publisher's
        path, one call per bus message rather than one per publish (issue 13)."""
        out = self._out
        for topic, payload, retain in messages:
            qos, field = topics[topic]
            if qos:
                self._queue(topic, payload, retain, None, qos)
            elif self._writer is not None:
                packet = wire.publish_qos0(field, payload, retain)
                if self._backlog or self._releasing:
                    self._backlog.append(packet)
                else:
                    out += packet
        self._schedule_flush()

    def _queue(self, topic: str, payload: bytes, retain: bool, future: asyncio.Future[None] | None,
               qos: int) -> None:
        if qos not in (1, 2):
            raise ValueError("the client publishes at QoS 1 or 2 only (kept until acknowledged)")
        mid = self._mid()
        self._outgoing[mid] = (topic, payload, retain, future, qos)
        self._idle.clear()
        if self._writer is None:
            return  # it goes out with the others when the connection is up
        window_full = self.window is not None and len(self._written) >= self.window
        if self._backlog or self._releasing or window_full:
            self._backlog.append(mid)
        else:
            self._written.add(mid)
            self._out += wire.publish(topic, payload, qos, retain, mid)
        self._schedule_flush()

    def _pump(self) -> None:
        """Write what waits in the backlog, as far as the window allows."""
        backlog, written, window = self._backlog, self._written, self.window
        while not self._releasing and backlog and (window is None or len(written) < window):
            item = backlog.popleft()
            if isinstance(item, bytes):
                self._out += item
                continue
            entry = self._outgoing.get(item)
            if entry is None:
                continue
            topic, payload, retain, _, qos = entry
            written.add(item)
            self._out += wire.publish(topic, payload, qos, retain, item, dup=item in self._resend)
            self._resend.discard(item)

    def _puback(self, mid: int) -> None:
        """Acknowledge an incoming message behind the publishes already waiting for the window."""
        if self._backlog:
            self._backlog.append(wire.puback(mid))
        else:
            self._out += wire.puback(mid)

    @property
    def in_flight(self) -> int:
        return len(self._outgoing)

    @property
    def drained(self) -> bool:
        return not self._outgoing

    async def wait_idle(self, timeout: float) -> bool:
        """True once the broker acknowledged everything published, False after `timeout`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        return self._idle.is_set()

    def _mid(self) -> int:
        if len(self._outgoing) >= MAX_IN_FLIGHT - 1:  # one id stays free for a SUBSCRIBE
            raise ConnectionError(f"{MAX_IN_FLIGHT} messages wait for the broker")
        while True:
            self._next_mid = self._next_mid % MAX_IN_FLIGHT + 1
            if self._next_mid not in self._outgoing and self._next_mid != self._sub_mid:
                return self._next_mid

    def _schedule_flush(self) -> None:
        # Everything published in one loop iteration goes out in one write.
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush_now)

    def _flush_now(self) -> None:
        try:
            if self.before_flush is not None:
                self.before_flush()  # still pending: its publishes need no flush of their own
        finally:
            self._flush_pending = False  # never left set: no write would ever be scheduled again
        if self._out and self._writer is not None:
            self._writer.write(bytes(self._out))
            self._out.clear()

    # --- lifecycle ---
    async def run(self, stop: asyncio.Event, drain: float = 5.0) -> None:
        """Connect, serve, reconnect with back-off until `stop` is set; then drain and disconnect."""
        loop = asyncio.get_running_loop()
        delay = self.min_delay
        try:
            while not stop.is_set():
                started = loop.time()
                try:
                    async with asyncio.timeout(self.connect_timeout):
                        reader, writer = await self._open()
                except (OSError, TimeoutError) as exc:
                    self.log.warning(kv(event="bus_connect_failed", error=exc or type(exc).__name__))
                else:
                    await self._serve(reader, writer, stop, drain)
                    if stop.is_set():
                        break
                    self.log.warning(kv(event="bus_disconnected"))
                    if loop.time() - started >= STABLE:
                        delay = self.min_delay
                await _wait(stop, delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.max_delay)
        finally:
            for _, _, _, future, _ in self._outgoing.values():
                if future is not None and not future.done():
                    future.set_exception(ConnectionError("the bus client stopped"))

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The broker's Unix socket when it has one here (the local stack: Mosquitto spent a tenth
        to a sixth less a reading than with the services on loopback TCP, issue 13), else
        host:port."""
        if self.socket_path is not None and self.socket_path.exists():
            self.via = "unix"
            return await asyncio.open_unix_connection(self.socket_path)
        self.via = "tcp"
        return await asyncio.open_connection(self.host, self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stop: asyncio.Event,
                     drain: float) -> None:
        session = asyncio.create_task(self._session(reader, writer), name=f"mqtt-{self.client_id}")
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({session, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper.done() and not session.done():
                await self._drain(writer, drain)
        finally:
            stopper.cancel()
            session.cancel()
            await asyncio.wait({session}, timeout=5)  # bounded: never hang a shutdown on a lost cancel
            if session.done() and not session.cancelled() and session.exception() is not None:
                exc = session.exception()
                self.log.error(kv(event="bus_error", error=type(exc).__name__, detail=exc))
            writer.close()
            self._lost()

    async def _drain(self, writer: asyncio.StreamWriter, timeout: float) -> None:
        """Take no new messages, wait for the broker to acknowledge what is in flight, DISCONNECT."""
        self.stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with contextlib.suppress(TimeoutError):  # a handler already running finishes and is acknowledged
            async with asyncio.timeout(timeout):
                await self._not_handling.wait()
        await self.wait_idle(max(0.0, deadline - loop.time()))
        with contextlib.suppress(OSError, ConnectionError):
            self._flush_now()
            writer.write(wire.DISCONNECT_PACKET)
            await writer.drain()

    def _lost(self) -> None:
        was = self.connected
        self.connected = False
        self._writer = None
        self._out.clear()  # publishes stay in _outgoing (resent); unsent PUBACKs mean redelivery
        self._backlog.clear()
        self._resend |= self._written  # written on this connection: DUP when written again
        self._written.clear()
        self._releasing = 0  # done again on the next connection if it did not finish
        self.subscribed.clear()
        if was and not self.stopping:  # a stop's own DISCONNECT loses nothing
            self.log.warning(kv(event="bus_lost"))

    # --- one connection ---
    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(wire.connect(self.client_id, self.username, self._password, self.clean_session,
                                  self.keepalive))
        buf = bytearray()
        try:
            async with asyncio.timeout(10):
                packet = await _next_packet(reader, buf)
            if packet is None or packet.kind != wire.CONNACK:
                raise wire.WireError("no CONNACK")
            session_present, code = wire.parse_connack(packet)
        except (TimeoutError, OSError, ConnectionError, wire.WireError) as exc:
            self.log.warning(kv(event="bus_connect_failed", error=exc or type(exc).__name__))
            return
        if code != 0:
            self.log.error(kv(event="bus_refused", reason=f"CONNACK code {code}"))
            return
        self.connected = True
        self.session += 1
        self._writer = writer
        self.log.info(kv(event="bus_connected", client_id=self.client_id, via=self.via,
                         session_present=int(session_present)))
        if self._unreleased and session_present:
            # Every id: this process has written nothing yet, so what it queued waits in the backlog.
            self._out += b"".join(map(wire.pubrel, range(1, MAX_IN_FLIGHT + 1)))
            self._releasing = MAX_IN_FLIGHT
        self._unreleased = self._unreleased and session_present
        for mid in self._outgoing:
            if mid in self._released and session_present:
                self._written.add(mid)
                self._out += wire.pubrel(mid)
            else:  # not stored yet, or stored in a session the broker no longer has
                self._released.discard(mid)
                self._backlog.append(mid)
        self._pump()
        if self.subscriptions:
            self._sub_mid = None
            self._sub_mid = self._mid()
            self._out += wire.subscribe(self._sub_mid, self.subscriptions)
        pinger = asyncio.create_task(self._ping(writer))
        try:
            self._flush_now()
            await writer.drain()
            await self._read_loop(reader, writer, buf)
        except (TimeoutError, OSError, ConnectionError, wire.WireError) as exc:
            self.log.warning(kv(event="bus_connection_lost", error=exc or type(exc).__name__))
        finally:
            pinger.cancel()

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         buf: bytearray) -> None:
        # See max_outgoing; what waits here stays unacknowledged if the connection ends.
        waiting: collections.deque[wire.Publish] = collections.deque()
        while True:
            pos = 0
            while True:
                if (ack := wire.ack_at(buf, pos)) is not None:  # the common case, without a Packet
                    self._on_ack(*ack)
                    pos += 4
                    continue
                found = wire.read_packet(buf, offset=pos)
                if found is None:
                    break
                packet, used = found
                pos += used
                if packet.kind == wire.PUBLISH:
                    msg = wire.parse_publish(packet)
                    if waiting or len(self._outgoing) >= self.max_outgoing:
                        waiting.append(msg)
                    else:
                        await self._on_publish(msg)
                elif packet.kind in (wire.PUBACK, wire.PUBREC, wire.PUBCOMP):
                    self._on_ack(packet.kind, wire.parse_mid(packet))
                elif packet.kind == wire.SUBACK:
                    self._on_suback(packet)
            del buf[:pos]
            while waiting and len(self._outgoing) < self.max_outgoing:
                await self._on_publish(waiting.popleft())
            self._flush_now()
            await writer.drain()
            if self.gather_acks and len(self._written) >= GATHER_IN_FLIGHT:
                await _pause_reading(writer.transport, self.gather_acks)
            async with asyncio.timeout(self.keepalive * 2):  # not wait_for: no task per read
                data = await reader.read(65536)
            if not data:
                return
            buf += data

    async def _on_publish(self, msg: wire.Publish) -> None:
        if self.stopping or self.on_message is None:
            return  # unacknowledged: a persistent session gets it again
        try:
            result = self.on_message(msg)
            if result is not None:
                self._not_handling.clear()
                try:
                    await result
                finally:
                    self._not_handling.set()
        except Exception:  # a bug must not kill the connection; the message stays unacknowledged
            self.log.exception(kv(event="handler_error", topic=msg.topic[:100]))
            return
        if msg.qos and msg.mid is not None and self.auto_ack:
            self._puback(msg.mid)  # after what the handler published: same write, in order

    def ack(self, mid: int, session: int) -> None:
        """With auto_ack=False: acknowledge a message taken on connection `session` (see above)."""
        if session != self.session or self._writer is None:
            return  # that connection is gone: the broker redelivers the message
        self._puback(mid)
        self._schedule_flush()

    def _on_ack(self, kind: int, mid: int) -> None:
        if self._releasing and kind == wire.PUBCOMP and mid not in self._written:
            self._releasing -= 1  # one of the release_stored PUBRELs
            if not self._releasing:
                self._unreleased = False
                self._pump()
            return
        if kind == wire.PUBREC:  # QoS 2: stored by the broker; released with PUBREL, done at PUBCOMP
            if mid in self._outgoing:
                self._released.add(mid)
            self._out += wire.pubrel(mid)  # also for an unknown id: the broker must be able to finish it
            return
        entry = self._outgoing.pop(mid, None)
        if entry is None:
            return
        self._released.discard(mid)
        self._written.discard(mid)
        self._resend.discard(mid)
        if self._backlog:
            self._pump()
        future = entry[3]
        if future is not None and not future.done():
            future.set_result(None)
        if not self._outgoing:
            self._idle.set()

    def _on_suback(self, packet: wire.Packet) -> None:
        mid, codes = wire.parse_suback(packet)
        if mid != self._sub_mid:
            return
        self._sub_mid = None
        topics = ",".join(t for t, _ in self.subscriptions)
        if any(code >= 0x80 for code in codes):
            self.log.error(kv(event="bus_subscribe_failed", topics=topics, codes=",".join(map(str, codes))))
        else:
            self.subscribed.set()
            self.log.info(kv(event="bus_subscribed", topics=topics))

    async def _ping(self, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                await asyncio.sleep(self.keepalive / 2)
                writer.write(wire.PINGREQ_PACKET)


async def _next_packet(reader: asyncio.StreamReader, buf: bytearray) -> wire.Packet | None:
    while (found := wire.read_packet(buf)) is None:
        data = await reader.read(65536)
        if not data:
            return None
        buf += data
    packet, used = found
    del buf[:used]
    return packet


async def _pause_reading(transport: asyncio.BaseTransport, seconds: float) -> None:
    """Let what arrives gather in the socket for `seconds` (not when the stream paused reading
    itself because its buffer is full: it resumes when that buffer is read)."""
    if not isinstance(transport, asyncio.ReadTransport) or not transport.is_reading():
        return
    transport.pause_reading()
    try:
        await asyncio.sleep(seconds)
    finally:
        transport.resume_reading()


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
