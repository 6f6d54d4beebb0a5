"""The v2 protocol handler (docs/protocol-v2.md): frames in, readings to the bus, acks back.

Per frame: `v2.read` checks the header and refuses an oversize length before
any body byte is read; auth (the only process with keys) checks the counter,
verifies and decrypts, and seals the ack with its answer; the reading is
published with its seq; once the broker's PUBACK arrives, the ack is written to
the device and auth is told (op v2acked, its answer not awaited), so a reading
costs one auth round trip (an auth that sends no ack is asked with op v2ack then).
Frames are pipelined: reading the next frame does not wait for the previous
frame's PUBACK, and the whole frames of a read are asked of auth in one request
(`frames`) and answered in order (a bad frame closes the connection after the good ones in
front of it are served; those behind it are not published and the device sends
them again, accepted late by the replay window). A duplicate of an acknowledged reading is acked
again at once and nothing is published (reason `replay`, connection kept).
A verified reading refused for good (out_of_range, not_numeric, ...) gets auth's
authenticated refusal frame, the only answer that makes a device drop a reading;
the connection is kept, so the readings behind it flow. Every other refusal closes
the connection with no answer (the device sends again later, backing off).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import TYPE_CHECKING, Any

from services.common import authwire
from services.common import v2 as codec
from services.common.logs import kv
from services.proxy.authclient import PIPELINE
from services.proxy.errors import BusUnavailable, Reject
from services.proxy.output import event_payload
from services.proxy.v1 import check_values

if TYPE_CHECKING:
    from services.proxy.connection import Connection

log = logging.getLogger("medsec.proxy.v2")

READ_CHUNK = 4096


class V2Session:
    """Bytes in, whole frames out; no I/O. The buffer never exceeds one maximal frame plus one read."""

    def __init__(self, idle_timeout: float, reading_timeout: float, now: float) -> None:
        self.idle_timeout = idle_timeout
        self.reading_timeout = reading_timeout
        self.buffer = bytearray()
        self.last_data = now
        self.last_frame = now  # when the gateway finished taking the previous frame
        self.frame_started: float | None = None

    def feed(self, data: bytes, now: float) -> None:
        if not self.buffer:
            self.frame_started = now
        self.buffer += data
        self.last_data = now

    def next_frame(self, now: float) -> codec.Frame | None:
        try:
            frame, used = codec.read(self.buffer)
        except codec.V2Error as exc:
            raise Reject(exc.reason, exc.detail) from None
        if frame is not None:
            del self.buffer[:used]
            # Time the gateway spent on earlier frames (auth, PUBACK waits) is not the device's:
            # the clocks for the next frame start now, not when its first bytes were read.
            self.last_frame = now
            self.frame_started = now if self.buffer else None
        return frame

    def next_frames(self, now: float, limit: int) -> list[codec.Frame]:
        """The whole frames in the buffer, up to `limit`, in order. A bad frame raises Reject once
        the good ones before it have been taken (they are served first, as one by one)."""
        frames: list[codec.Frame] = []
        while len(frames) < limit:
            try:
                frame = self.next_frame(now)
            except Reject:
                if frames:
                    return frames  # the bad bytes stay in the buffer: the next call raises
                raise
            if frame is None:
                break
            frames.append(frame)
        return frames

    def deadline(self) -> tuple[float, str]:
        idle = max(self.last_data, self.last_frame) + self.idle_timeout
        if self.frame_started is not None and self.frame_started + self.reading_timeout < idle:
            return self.frame_started + self.reading_timeout, "reading_timeout"
        return idle, "idle_timeout"


class V2Handler:
    name = "v2"

    @staticmethod
    def claims(first_byte: int) -> bool:
        return codec.is_v2_start(first_byte)

    async def run(self, conn: Connection, first: bytes) -> None:
        session = V2Session(conn.config.idle_timeout, conn.config.reading_timeout, conn.now())
        session.feed(first, conn.now())
        acks: set[asyncio.Task[None]] = set()
        try:
            await self._serve(conn, session, acks, AckGroups(conn))
        except asyncio.CancelledError:  # killed (revocation, broker silent, shutdown): no more acks
            for task in acks:
                task.cancel()
            raise
        finally:
            # On a clean end or a refused frame, readings accepted before still get their acks.
            pending = [t for t in acks if not t.done()]
            if pending:
                with contextlib.suppress(Exception):
                    await asyncio.wait(pending, timeout=conn.config.bus_timeout)

    async def _serve(self, conn: Connection, session: V2Session, acks: set[asyncio.Task[None]],
                     groups: AckGroups) -> None:
        while True:
            frames = session.next_frames(conn.now(), PIPELINE)
            if not frames:
                when, reason = session.deadline()
                data = await conn.read(READ_CHUNK, when, reason)
                if not data:
                    if session.buffer:
                        detail = f"connection closed inside a frame ({len(session.buffer)} bytes)"
                        raise Reject("truncated", detail, conn.device)
                    return
                session.feed(data, conn.now())
                continue
            reply = await conn.ask_auth({
                "op": "v2", "conn": conn.id, "src": conn.src_text, "count": len(frames),
                "frames": authwire.b64_text(b"".join([frame.raw for frame in frames])),
            }, len(frames))
            for frame, answer in zip(frames, _answers(reply, len(frames)), strict=True):
                await self._answered(conn, frame, answer, acks, groups)

    async def _answered(self, conn: Connection, frame: codec.Frame, reply: dict[str, Any],
                        acks: set[asyncio.Task[None]], groups: AckGroups) -> None:
        """One frame's auth answer, in the frames' order: publish and ack, ack again, refuse, or close."""
        status = reply.get("status")
        device = reply.get("device")
        answered = isinstance(device, str) and reply.get("seq") == frame.seq
        if status in ("ok", "duplicate") and not answered:
            raise Reject("auth_protocol", "auth answered without the device or the frame's seq")
        if status == "ok":
            sealed = _answer_bytes(reply, "ack", frame) if "ack" in reply else None
            puback = await conn.accept_reading(device, check_values(reply.get("values")), "v2", frame.seq,
                                               reply.get("gen"))
            if sealed is not None:
                groups.add(puback, frame, sealed)
                return
            task = asyncio.create_task(self._ack_after(conn, frame, puback), name=f"v2-ack-{conn.id}")
            acks.add(task)
            task.add_done_callback(acks.discard)
        elif status == "duplicate":
            if conn.device is not None and device != conn.device:
                raise Reject("device_changed", f"frame of {device} on a connection of {conn.device}",
                             conn.device)
            self._replayed(conn, device, frame.seq)
            _send(conn, _answer_bytes(reply, "ack", frame))
            conn.duplicate(device, frame.seq)  # a connection that keeps sending them is closed
        elif status == "rejected" and reply.get("refusal") is not None:
            self._refuse(conn, frame, reply)
        elif status == "rejected":
            raise Reject(str(reply.get("reason") or "rejected"), str(reply.get("detail") or ""),
                         device if isinstance(device, str) else None)
        else:
            raise Reject("auth_protocol", f"unexpected auth status {str(status)[:20]!r}")

    async def _ack_after(self, conn: Connection, frame: codec.Frame, puback: asyncio.Future[None]) -> None:
        """Ack only after the broker has the reading; without a PUBACK the device will send it again."""
        try:
            async with asyncio.timeout(conn.config.bus_timeout):
                await asyncio.shield(puback)
            reply = await conn.ask_auth(
                {"op": "v2ack", "conn": conn.id, "kid": frame.kid.hex(), "seq": frame.seq})
            if reply.get("status") != "ok":
                raise Reject(str(reply.get("reason") or "auth_protocol"), str(reply.get("detail") or ""))
            _send(conn, _answer_bytes(reply, "ack", frame))
        except (TimeoutError, ConnectionError, BusUnavailable) as exc:
            log.warning(kv(event="no_ack", conn=conn.id, device=conn.device or "-", seq=frame.seq,
                           detail=exc.__class__.__name__))
        except Reject as exc:
            log.warning(kv(event="no_ack", conn=conn.id, device=conn.device or "-", seq=frame.seq,
                           reason=exc.reason, detail=exc.detail[:100]))

    @staticmethod
    def _refuse(conn: Connection, frame: codec.Frame, reply: dict[str, Any]) -> None:
        """A verified reading refused for good: one log line, one event, the refusal to the device."""
        device, reason = reply.get("device"), str(reply.get("reason") or "rejected")
        detail = str(reply.get("detail") or "")
        if not isinstance(device, str):
            raise Reject("auth_protocol", "auth refused a reading without naming the device")
        if conn.device is not None and device != conn.device:
            raise Reject("device_changed", f"frame of {device} on a connection of {conn.device}", conn.device)
        refusal = _answer_bytes(reply, "refusal", frame)
        conn.state.metrics.rejected[reason] += 1
        log.warning(kv(event="refused", conn=conn.id, device=device, seq=frame.seq, reason=reason,
                       src=conn.src_text, detail=detail[:100]))
        detail = f"seq {frame.seq}: {detail}; refusal sent"
        conn.state.output.publish_event(device, event_payload(
            "rejected", device, reason, detail, conn.src, "v2", time.time()))
        _send(conn, refusal)

    @staticmethod
    def _replayed(conn: Connection, device: str, seq: int) -> None:
        """An already acknowledged reading came again: one log line, one event, nothing published."""
        conn.state.metrics.rejected["replay"] += 1
        log.info(kv(event="replay", conn=conn.id, device=device, seq=seq, src=conn.src_text))
        detail = f"seq {seq} was already acknowledged: acked again, not published"
        conn.state.output.publish_event(device, event_payload(
            "rejected", device, "replay", detail, conn.src, "v2", time.time()))


class AckGroups:
    """A connection's sealed acks, grouped by the bus message that carries their readings: one
    done callback, one write and one entry of a `v2acked` notification for each group once the
    broker's PUBACK of that message arrives (issue 13: a callback and a notification per reading
    were a cost per reading in the proxy and in auth)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._puback: asyncio.Future[None] | None = None
        self._kid = b""
        self._group: list[tuple[int, bytes]] = []

    def add(self, puback: asyncio.Future[None], frame: codec.Frame, ack: bytes) -> None:
        """`frame`'s ack, to write once `puback` completes. Readings are accepted in order and a
        bus message's future never comes back once a later one was handed out, so a group is
        only ever the last one."""
        if (puback is not self._puback or frame.kid != self._kid
                or len(self._group) >= codec.ReplayWindow.WINDOW):
            self._puback, self._kid, self._group = puback, frame.kid, []
            puback.add_done_callback(functools.partial(_acks_on_puback, self._conn, frame.kid, self._group))
        self._group.append((frame.seq, ack))


def _acks_on_puback(conn: Connection, kid: bytes, group: list[tuple[int, bytes]],
                    puback: asyncio.Future[None]) -> None:
    """The broker has the readings: the device gets their acks, auth marks their seqs acknowledged."""
    seqs = [seq for seq, _ in group]
    if puback.cancelled() or puback.exception() is not None:
        error = "cancelled" if puback.cancelled() else type(puback.exception()).__name__
        log.warning(kv(event="no_ack", conn=conn.id, device=conn.device or "-",
                       seq=",".join(map(str, seqs)), detail=error))
        conn.flush_answers()  # the acks held for this group's PUBACK
        return
    if not conn.writer.is_closing():
        conn.write_acks(b"".join(ack for _, ack in group))
    conn.state.auth.acked(conn.id, kid.hex(), seqs)


def _answers(reply: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """The answers to a request of `count` frames: one each, in order. A request refused whole
    (the key store away, auth failing on it) answers each of its frames alike."""
    answers = reply.get("answers")
    if reply.get("status") == "answers" and isinstance(answers, list) and len(answers) == count:
        return [a if isinstance(a, dict) else {} for a in answers]
    if reply.get("status") == "rejected":
        return [reply] * count
    raise Reject("auth_protocol", f"auth answered {count} frames without an answer for each")


def _send(conn: Connection, ack: bytes) -> None:
    """Write an ack unless the device already hung up (it will get it again when it re-sends)."""
    if not conn.writer.is_closing():
        conn.write(ack)


def _answer_bytes(reply: dict[str, Any], name: str, frame: codec.Frame) -> bytes:
    """Auth's answer frame (`ack` or `refusal`), checked to answer exactly this frame's kid and seq."""
    value = reply.get(name)
    data = (authwire.b64_bytes(value) if isinstance(value, str) else None) or b""
    if not codec.is_answer_to(data, frame, name):  # type: ignore[arg-type]
        raise Reject("auth_protocol", f"auth answered without a valid {name} frame for seq {frame.seq}")
    return data
