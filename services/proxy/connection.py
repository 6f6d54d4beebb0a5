"""One device connection: reads with deadlines, runs its protocol handler, closes with one reason.

Every way a connection ends goes through `run()`'s single close path: one log
line, one "rejected" event for a fault (unidentified connections on
`medsec/events/~unidentified`), and a "disconnect" event when the last
connection of an identified device closes in this proxy.

Readings pass the v1 policies of issue 14 first (replay.py, ratelimit.py): a replay or a reading
above its device's rate is dropped (event `dropped`, reported once per interval) and brings
nothing online; two live connections of one device are a `duplicate_session` until one is left.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from services.common.logs import kv
from services.proxy import protocols, proxyproto
from services.proxy.authclient import PIPELINE
from services.proxy.errors import NORMAL_CLOSE, BusUnavailable, Reject
from services.proxy.output import event_payload, ingest_payload
from services.proxy.replay import DuplicateGuard
from services.proxy.state import ProxyState

log = logging.getLogger("medsec.proxy")

FIRST_READ = 4096
# Readings of one connection that may wait for their PUBACK before the connection stops reading:
# two auth requests' worth (PIPELINE each). At 8 a device streaming flat out, 13 readings a read,
# stopped in the middle of each read for a PUBACK (issue 13: with 32, 20 devices flat out cost the
# proxy 0.033-0.039 ms a v1 reading instead of 0.037-0.047, and a v2 reading 0.035-0.038 instead
# of 0.047-0.050; auth and the publisher less too: fewer, fuller batches).
MAX_PENDING_ACKS = 2 * PIPELINE  # 32
MAX_WRITE_BUFFER = 64 * 1024
# Acknowledgements held while later readings of the connection are on their way: about 20 at
# most, for at most 20 ms.
HELD_ACK_BYTES = 512
HELD_ACK_SECONDS = 0.02
# Failed identifications that count toward throttling an address: keys or key ids nobody registered.
GUESSES = frozenset({"unknown_key", "unknown_kid"})
# Closes that count too, although the readings decoded: replaying sniffed traffic.
REPLAYS = frozenset({"replay", "too_many_duplicates"})


class Connection:
    def __init__(self, state: ProxyState, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 src: tuple[str, int]) -> None:
        self.state = state
        self.config = state.config
        self.reader = reader
        self.writer = writer
        self.id = state.next_conn_id()
        self.loop = asyncio.get_running_loop()
        sock = writer.get_extra_info("sockname") or ("?", 0)
        self.src = src  # the device's address: the peer's, or the balancer's PROXY header's
        self.gw: tuple[str, int] = (str(sock[0]), int(sock[1]))
        self.src_text = f"{self.src[0]}:{self.src[1]}"
        self.device: str | None = None  # set by the first reading that decodes under a device's key
        self.online = False  # a new reading came: the connection counts for the device's status
        self.guard = DuplicateGuard(self.config.max_duplicates)
        self.protocol: str | None = None
        self.readings = 0
        self.started = self.loop.time()
        self.first_byte_at = self.started
        self.task: asyncio.Task[None] | None = None
        self._kill: tuple[str, str] | None = None
        self._closing = False
        self._asked_auth = False
        self._asking = False  # readings are with auth: their acks will follow soon
        # Readings published and not yet seen acknowledged, oldest first: [PUBACK future, how many
        # of this connection's readings it carries, when the first was published]. Readings that
        # go in one bus batch share its future and one entry (issue 13: a callback per reading).
        # Only successes leave from the front as they are seen; a failure stays until the
        # reading loop or the close meets it, so it is always reported.
        self._unacked: deque[list] = deque()
        self._pending = 0  # readings in _unacked: at MAX_PENDING_ACKS the connection stops reading
        # The one timer that watches the oldest of them (a timer per reading was a twentieth of
        # the proxy's CPU).
        self._watchdog: asyncio.TimerHandle | None = None
        self._out = bytearray()  # answers to the device, written at the end of the loop turn
        self._write_scheduled = False
        self._held_since = 0.0  # when the oldest answer in _out was put there
        # The deadline of the read in progress, under one timer per connection that is moved only
        # when a deadline comes earlier than it (issue 13: asyncio.timeout made and cancelled a
        # timer per read). The timer cancels the task; read() turns that into Reject(reason).
        self._read_deadline: float | None = None  # set only while a read waits
        self._read_timer: asyncio.TimerHandle | None = None
        self._read_overdue = False

    def now(self) -> float:
        return self.loop.time()

    # --- what protocol handlers use ---
    async def read(self, limit: int, deadline: float, reason: str) -> bytes:
        """Up to `limit` bytes; b"" at end of stream; Reject(reason) if nothing came by `deadline`.
        Called from the connection's task (run())."""
        if deadline <= self.loop.time():
            raise Reject(reason, self._timeout_detail(reason))
        timer = self._read_timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._read_timer = self.loop.call_at(deadline, self._check_read)
        self._read_deadline = deadline
        try:
            return await self.reader.read(limit)
        except asyncio.CancelledError:
            # Ours (the deadline passed) unless the task was cancelled for another reason too
            # (kill, shutdown): then that cancellation goes on.
            if not self._read_overdue or self.task is None or self.task.uncancel() > 0:
                raise
            raise Reject(reason, self._timeout_detail(reason)) from None
        finally:
            self._read_deadline = None
            self._read_overdue = False

    def _check_read(self) -> None:
        """The read timer: cancel the task if its read is past its deadline; else wait for it."""
        self._read_timer = None
        if self._read_deadline is None or self.task is None:
            return  # no read waits: the next one sets the timer again
        if self.loop.time() < self._read_deadline:
            self._read_timer = self.loop.call_at(self._read_deadline, self._check_read)
        elif not self._read_overdue:
            self._read_overdue = True
            self.task.cancel()

    def _timeout_detail(self, reason: str) -> str:
        if reason == "reading_timeout":
            return f"reading not complete within {self.config.reading_timeout:g} s of its first byte"
        return f"nothing received for {self.config.idle_timeout:g} s"

    async def ask_auth(self, message: dict[str, Any], readings: int = 1) -> dict[str, Any]:
        """Auth's answer to `message`, about `readings` readings (for the auth time per reading)."""
        return (await self.ask_auth_many([message], readings))[0]

    async def ask_auth_many(self, messages: list[dict[str, Any]],
                            readings: int | None = None) -> list[dict[str, Any]]:
        """Auth's answers to `messages`, asked together (one write, pipelined), in order; they
        are about `readings` readings (one each if not said)."""
        self._asked_auth = True
        started = time.perf_counter()
        self._asking = True
        try:
            replies = await self.state.auth.request_many(messages)
        finally:
            self._asking = False
        elapsed = time.perf_counter() - started
        self.state.metrics.observe(self.state.metrics.auth, elapsed, readings or len(replies))
        return replies

    async def accept_reading(self, device: str, values: dict[str, str], protocol: str,
                             seq: int | None = None, gen: int | None = None,
                             fingerprint: int | None = None) -> asyncio.Future[None]:
        """Publish a decoded reading; returns the PUBACK future (v2 acks the device after it).

        A v1 reading (`fingerprint`: a hash of its ciphertext blocks, byte-identical readings have
        the same) that is a replay or above the device's rate is dropped instead (counted,
        reported, never published, and it does not bring the device online): the future
        returned is then already done, with nothing to wait for.
        """
        if not isinstance(gen, int) or isinstance(gen, bool):
            gen = None  # an auth that does not send it yet
        self._bind(device)
        if fingerprint is not None and self._drop_v1(device, fingerprint):
            done: asyncio.Future[None] = self.loop.create_future()
            done.set_result(None)
            return done
        self.guard.fresh(seq)
        if not self.online:
            self._identify(device, protocol)
        self._oldest_unacked()  # takes off the acknowledged ones in front
        while self._pending >= MAX_PENDING_ACKS:
            await self._await_front(bounded=False)
        payload = ingest_payload(device, values, protocol, seq, self.src, self.gw,
                                 self.state.next_uid(), time.time(), gen)
        future = self.state.output.publish_reading(device, payload)
        self._watch(future)
        return future

    def _watch(self, future: asyncio.Future[None]) -> None:
        """A device may send nothing more for a while: the broker's silence must close it anyway."""
        unacked = self._unacked
        if unacked and unacked[-1][0] is future:
            unacked[-1][1] += 1
        else:
            unacked.append([future, 1, self.loop.time()])
        self._pending += 1
        if self._watchdog is None:
            self._watchdog = self.loop.call_at(unacked[0][2] + self.config.bus_timeout, self._check_acks)

    def _check_acks(self) -> None:
        """Close the connection if its oldest unacknowledged reading is bus_timeout old; else
        watch the next one."""
        self._watchdog = None
        oldest = self._oldest_unacked()
        if oldest is None:
            return
        due = oldest + self.config.bus_timeout
        if self.loop.time() < due:
            self._watchdog = self.loop.call_at(due, self._check_acks)
            return
        self.kill("bus_unavailable", f"no PUBACK within {self.config.bus_timeout:g} s")

    def _oldest_unacked(self) -> float | None:
        """When the oldest reading not seen acknowledged was published; the acknowledged ones in
        front of it are counted and taken off (a failed one stays: see _unacked)."""
        unacked = self._unacked
        while unacked and _succeeded(unacked[0][0]):
            readings = unacked.popleft()[1]
            self._pending -= readings
            self.readings += readings
        return unacked[0][2] if unacked else None

    def write(self, data: bytes) -> None:
        """For protocols that answer the device (v2 acknowledgements and refusals).

        The answers of one loop turn go out in one write at its end (issue 13: the PUBACK of a bus
        batch completes several of a connection's readings at once; a system call per ack was a
        fifth of the proxy's time). A device that does not read its answers must not make the
        proxy buffer them without end.
        """
        self._out += data
        self._schedule_write()

    def write_acks(self, data: bytes) -> None:
        """Acknowledgements of readings the broker has. Written with write() when nothing of the
        connection's is on its way (no later reading with auth or waiting for its PUBACK); else
        held for the write that comes with the next ones, up to HELD_ACK_SECONDS and
        HELD_ACK_BYTES (issue 13: a device streaming flat out got a write per bus message; at a
        reading every 100 ms nothing is on its way behind an ack, so none is held). Whatever is
        on its way ends in another write_acks, a write (refusal, duplicate) or the close, each
        of which writes what is held."""
        now = self.loop.time()
        if not self._out:
            self._held_since = now
        self._out += data
        if ((not self._asking and self._oldest_unacked() is None) or len(self._out) >= HELD_ACK_BYTES
                or now - self._held_since >= HELD_ACK_SECONDS):
            self._schedule_write()

    def flush_answers(self) -> None:
        """Write the answers held now: the PUBACK they were held for failed."""
        if self._out:
            self._schedule_write()

    def _schedule_write(self) -> None:
        if not self._write_scheduled:
            self._write_scheduled = True
            self.loop.call_soon(self._write_out)

    def _write_out(self) -> None:
        self._write_scheduled = False
        if self._out and not self.writer.is_closing():
            self.writer.write(bytes(self._out))
            if self.writer.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
                self.kill("slow_consumer",
                          f"device left more than {MAX_WRITE_BUFFER} bytes of answers unread")
        self._out.clear()

    def duplicate(self, device: str, seq: int | None) -> None:
        """A reading the gateway already has (v2: auth answered `duplicate`; its ack is written).

        A device resending its unacknowledged readings after a reconnect is forgiven; a
        connection that keeps sending duplicates is closed (too_many_duplicates).
        """
        self._bind(device)
        if self.guard.duplicate(seq):
            raise Reject("too_many_duplicates",
                         f"{self.guard.strikes} readings already acknowledged sent again", device)

    # --- internals ---
    def _bind(self, device: str) -> None:
        """The first reading decoded under a device's key ties the connection to that device."""
        if self.device is not None:
            if device != self.device:
                raise Reject("device_changed", f"reading of {device} on a connection of {self.device}",
                             self.device)
            return
        if self.state.recently_revoked(device):
            raise Reject("revoked", "device was revoked", device)
        self.device = device
        others = self.state.bind(device, self)
        if others and device not in self.state.duplicate_open:
            self._duplicate_session(device, others[0])

    def _duplicate_session(self, device: str, other: Connection) -> None:
        """Two connections speak for one device: a replay, a clone, or a reconnect the old
        connection has not noticed yet. Reported once until the device is down to one again."""
        state = self.state
        state.duplicate_open.add(device)
        state.metrics.duplicate_sessions += 1
        reason = "new_address" if other.src[0] != self.src[0] else "two_connections"
        detail = (f"{device} on two connections: {other.src_text} (since "
                  f"{self.loop.time() - other.started:.0f} s) and {self.src_text}")
        log.warning(kv(event="duplicate_session", device=device, reason=reason, conn=self.id,
                       src=self.src_text, peer=other.src_text))
        state.output.publish_event(device, event_payload(
            "duplicate_session", device, reason, detail, self.src, self.protocol, time.time(), other.src))

    def _drop_v1(self, device: str, fingerprint: int) -> bool:
        """Replays and readings above the device's rate: True when this reading is dropped."""
        state, now = self.state, self.loop.time()
        if state.replays.seen(device, fingerprint, now):
            self._dropped(device, "replay", "byte-identical to a reading of the last "
                          f"{self.config.replay_window:g} s")
            if self.guard.duplicate(None):
                raise Reject("replay", f"{self.guard.strikes} replayed readings", device)
            return True
        if not state.rate.allow(device, now):
            self._dropped(device, "rate_limited", f"above {self.config.device_max_rate:g} readings/s "
                          f"(burst {self.config.device_burst})")
            return True
        return False

    def _dropped(self, device: str, reason: str, why: str) -> None:
        """Counted always; logged and evented at most once per device and reason per interval."""
        state = self.state
        state.metrics.dropped[reason] += 1
        count = state.reporter.due(device, reason, self.loop.time())
        if count is None:
            return
        detail = f"{count} reading{'s' if count != 1 else ''} dropped: {why}"
        log.warning(kv(event="dropped", device=device, reason=reason, conn=self.id, src=self.src_text,
                       count=count, detail=why))
        self._event("dropped", device, reason, detail)

    def _identify(self, device: str, protocol: str) -> None:
        self.online = True
        count = self.state.add_device(device, self)
        self.state.metrics.observe(self.state.metrics.identify, self.loop.time() - self.first_byte_at)
        # DEBUG: a connection's one line is its close line (docs/operations.md); the connect
        # event goes to the bus. Two lines a connection were a fifth of the proxy's CPU in a burst.
        log.debug(kv(event="connect", conn=self.id, device=device, src=self.src_text, protocol=protocol,
                     connections=count))
        self._event("connect", device, None, f"connections={count}")

    async def _await_front(self, bounded: bool = True) -> None:
        """Wait for the PUBACK of the oldest readings not seen acknowledged (shielded: the bus
        message may carry other connections' readings); they stay in _unacked meanwhile, under
        the watchdog. Unbounded while the connection runs: the watchdog (_check_acks) closes it
        when the broker stays silent, and a timer per wait was a twentieth of the proxy's CPU
        (issue 13). Bounded once it is closing, when kill() no longer acts. BusUnavailable if
        they were not acknowledged."""
        future = self._unacked[0][0]
        try:
            if not bounded:
                await asyncio.shield(future)
            else:
                async with asyncio.timeout(self.config.bus_timeout):
                    await asyncio.shield(future)
        except TimeoutError:
            raise BusUnavailable(f"no PUBACK within {self.config.bus_timeout:g} s") from None
        except ConnectionError as exc:
            raise BusUnavailable(str(exc)) from None
        self._oldest_unacked()  # counts them and takes them off

    def _event(self, event: str, device: str | None, reason: str | None, detail: str) -> None:
        self.state.output.publish_event(device, event_payload(
            event, device, reason, detail, self.src, self.protocol, time.time()))

    def kill(self, reason: str, detail: str) -> None:
        """Close from outside (revocation, shutdown): the task ends through the close path."""
        if self._closing or self._kill is not None or self.task is None:
            return
        self._kill = (reason, detail)
        self.task.cancel()

    async def run(self) -> None:
        reason, detail, hint = "eof", "", None
        try:
            first = await self.read(FIRST_READ, self.started + self.config.idle_timeout, "idle_timeout")
            if first:
                self.first_byte_at = self.loop.time()
                handler = protocols.select(first[0])
                if handler is None and first.startswith(proxyproto.SIGNATURE[:len(first)]):
                    raise Reject("unsupported_protocol", "a PROXY protocol header: this proxy is behind "
                                 "a balancer that sends one, so set MEDSEC_PROXY_PROTOCOL=1")
                if handler is None:
                    raise Reject("unsupported_protocol",
                                 f"first byte {first[0]:#04x} starts no known protocol")
                self.protocol = handler.name
                await handler.run(self, first)
                await self._drain_acks()
        except Reject as exc:
            reason, detail, hint = exc.reason, exc.detail, exc.device
        except asyncio.CancelledError:
            if self._kill is None:
                self._finish("shutdown", "cancelled", None)
                raise
            reason, detail = self._kill
        except (ConnectionError, OSError) as exc:  # reset by peer, broken pipe
            reason, detail = "reset", exc.__class__.__name__
        except Exception as exc:  # a bug must cost one connection, never the server
            log.error(kv(event="internal_error", conn=self.id, detail=repr(exc)[:200]))
            reason, detail = "internal_error", exc.__class__.__name__
        self._closing = True
        try:  # readings already sent are confirmed before the close is reported
            if reason != "bus_unavailable":
                with contextlib.suppress(Reject):
                    await self._drain_acks()
        finally:  # even when shutdown's deadline cancels the drain
            self._finish(reason, detail, hint)

    async def _drain_acks(self) -> None:
        while self._unacked:
            await self._await_front()

    def _finish(self, reason: str, detail: str, hint: str | None) -> None:
        self._closing = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._read_timer is not None:
            self._read_timer.cancel()
        self._write_out()  # the acks of readings confirmed in this very turn
        self.writer.close()
        state = self.state
        state.connections.pop(self.id, None)
        if self._asked_auth:
            state.auth.send({"op": "close", "conn": self.id})
        state.metrics.closed[reason] += 1
        device = self.device or hint
        if self.device is not None:
            fault = reason not in NORMAL_CLOSE
        else:  # never sent a reading: a timeout or a reset is a fault too
            fault = reason not in ("eof", "shutdown")
        fields = dict(event="close", conn=self.id, src=self.src_text, device=device or "-",
                      protocol=self.protocol or "-", reason=reason, detail=detail or "-",
                      readings=self.readings, seconds=f"{self.loop.time() - self.started:.3f}")
        if (reason == "eof" and self.device is None) or (reason == "reset" and self.protocol is None):
            # Left without a reading, or reset before its first byte: a port check (HAProxy ends
            # its health checks with a reset), not a device: no warning, no event.
            log.debug(kv(**fields))
            return
        (log.warning if fault else log.info)(kv(**fields))
        if fault:
            state.metrics.rejected[reason] += 1
            self._event("rejected", device, reason, detail)
            if (reason in GUESSES and self.device is None) or reason in REPLAYS:
                block = state.throttle.failure(self.src[0], self.loop.time())
                if block is not None:
                    log.warning(kv(event="throttled", src=self.src[0], seconds=f"{block.seconds:g}",
                                   strikes=block.strikes))
                    state.output.publish_event(None, event_payload(
                        "throttled", None, "too_many_failures",
                        f"{state.throttle.failures} failed identifications or replays; "
                        f"refused for {block.seconds:g} s",
                        self.src, self.protocol, time.time()))
        if self.online and self.device is not None:
            left = state.remove_device(self.device, self)
            if left == 0:
                self._event("disconnect", self.device, reason, detail)
        if self.device is not None:
            self._unbind(self.device, reason)

    def _unbind(self, device: str, reason: str) -> None:
        state = self.state
        if state.unbind(device, self) <= 1 and device in state.duplicate_open:
            state.duplicate_open.discard(device)
            log.info(kv(event="duplicate_session_end", device=device, conn=self.id, src=self.src_text))
            self._event("duplicate_session_end", device, reason,
                        f"{device} is down to one connection ({self.src_text} closed)")


def _succeeded(future: asyncio.Future[None]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None
