"""The v1 protocol handler: a pure session (framing and timing) driven against the auth service.

A v1 stream names no device and has no delimiter after a reading, so the
session asks auth about each complete run of blocks: "more" means the last
block was not the padding block yet (wait for bytes), "ok" means a reading is
complete and decoded, "rejected" ends the connection.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from services.common import v1 as codec
from services.proxy.authclient import PIPELINE
from services.proxy.errors import Reject

if TYPE_CHECKING:
    from services.proxy.connection import Connection

READ_CHUNK = 4096


class V1Session:
    """Bytes in, requests for auth out; no I/O. Times are the caller's clock (loop.time()).

    The buffer is bounded by construction: bytes are only read while the first
    reading is incomplete, and `codec.scan` refuses a reading of more than
    `max_blocks` blocks, so it never holds more than one maximal reading plus one read.
    """

    def __init__(self, max_blocks: int, idle_timeout: float, reading_timeout: float, now: float) -> None:
        self.max_blocks = max_blocks
        self.idle_timeout = idle_timeout
        self.reading_timeout = reading_timeout
        self.max_buffer = max_blocks * (codec.BLOCK_HEX + 1) + READ_CHUNK
        self.buffer = bytearray()
        self.last_data = now
        self.reading_started: float | None = None
        self._more_at: int | None = None  # buffer length when auth last answered "more"
        self.open = False  # the run of the last request is followed by '+': the reading goes on

    def feed(self, data: bytes, now: float) -> None:
        if not self.buffer:
            self.reading_started = now
        self.buffer += data
        self.last_data = now
        if len(self.buffer) > self.max_buffer:
            raise Reject("too_long", f"more than {len(self.buffer)} bytes without a complete reading")

    def next_request(self) -> codec.Scan | None:
        """The run of blocks to ask auth about, or None when more bytes are needed."""
        if self._more_at is not None and len(self.buffer) == self._more_at:
            return None
        try:
            found = codec.scan(self.buffer, self.max_blocks)
            self.open = found is None and self.buffer[-1:] == b"+"
            if self.open and self._more_at == len(self.buffer) - 1:
                return None  # only the '+' is new: these blocks were judged already
            if self.open:
                # Blocks and a '+': auth judges these blocks now (garbage is refused when it
                # arrives, not at the reading timeout); `open` tells it the reading goes on.
                found = codec.scan(bytes(self.buffer[:-1]), self.max_blocks)
        except codec.V1Error as exc:
            raise Reject(exc.reason, exc.detail) from None
        return found

    def next_requests(self, limit: int) -> list[codec.Scan]:
        """`next_request`, then the complete readings right behind it (each ended by the first byte
        of the next), up to `limit` in all; [] when more bytes are needed. Only the first may be
        open or not final; a fault after it waits its turn (the readings before it are served first,
        as one by one)."""
        found = self.next_request()
        if found is None:
            return []
        runs = [found]
        offset = found.consumed
        view = memoryview(self.buffer)
        try:
            while runs[-1].final and len(runs) < limit:
                try:
                    more = codec.scan(view[offset:], self.max_blocks)
                except codec.V1Error:
                    break
                if more is None or not more.final:
                    break
                runs.append(more)
                offset += more.consumed
        finally:
            view.release()  # the buffer grows and shrinks later: no export may outlive this
        return runs

    def more(self) -> None:
        """Auth saw no padding in the last block: the reading goes on."""
        self._more_at = len(self.buffer)

    def accepted(self, found: codec.Scan, now: float) -> None:
        del self.buffer[:found.consumed]
        self._more_at = None
        # The clocks restart once the gateway is ready for the device again: time spent on
        # auth and on the broker's PUBACK is ours, not the device's (under load it can be long).
        self.last_data = max(self.last_data, now)
        self.reading_started = now if self.buffer else None

    def deadline(self) -> tuple[float, str]:
        """When the connection must have sent more, and the reason if it has not."""
        idle = self.last_data + self.idle_timeout
        if self.reading_started is not None:
            slow = self.reading_started + self.reading_timeout
            if slow < idle:
                return slow, "reading_timeout"
        return idle, "idle_timeout"


def check_values(values: object) -> dict[str, str]:
    """Auth's decoded values: the seven fields as strings, else the answer is unusable."""
    if not isinstance(values, dict) or values.keys() != codec.FIELD_SET:
        raise Reject("auth_protocol", "auth answered ok without the seven fields")
    if not all(isinstance(v, str) for v in values.values()):
        raise Reject("auth_protocol", "auth answered ok with non-string values")
    return values


class V1Handler:
    """Legacy devices (protocol/v1.md): every first byte that is a hex digit."""

    name = "v1"

    @staticmethod
    def claims(first_byte: int) -> bool:
        return codec.is_v1_start(first_byte)

    async def run(self, conn: Connection, first: bytes) -> None:
        cfg = conn.config
        session = V1Session(cfg.max_reading_blocks, cfg.idle_timeout, cfg.reading_timeout, conn.now())
        session.feed(first, conn.now())
        while True:
            runs = session.next_requests(PIPELINE)
            if not runs:
                when, reason = session.deadline()
                data = await conn.read(READ_CHUNK, when, reason)
                if not data:
                    if session.buffer:
                        raise Reject("truncated",
                                     f"connection closed inside a reading ({len(session.buffer)} bytes)")
                    return
                session.feed(data, conn.now())
                continue
            replies = await conn.ask_auth_many([{
                "op": "v1", "conn": conn.id, "src": conn.src_text,
                "blocks": found.hex.decode(), "final": found.final,
                **({"open": True} if session.open and n == 0 else {}),
            } for n, found in enumerate(runs)])
            for found, reply in zip(runs, replies, strict=True):
                await self._answered(conn, session, found, reply)

    @staticmethod
    async def _answered(conn: Connection, session: V1Session, found: codec.Scan, reply: dict) -> None:
        """One reading's auth answer, in the readings' order: publish, wait for more, or close."""
        status = reply.get("status")
        if status == "more" and not found.final:
            session.more()
        elif status == "ok":
            device = reply.get("device")
            if not isinstance(device, str):
                raise Reject("auth_protocol", "auth answered ok without a device")
            await conn.accept_reading(device, check_values(reply.get("values")), "v1", None,
                                      reply.get("gen"), hash(found.hex))
            session.accepted(found, conn.now())
        elif status == "rejected":
            device = reply.get("device")
            raise Reject(str(reply.get("reason") or "rejected"), str(reply.get("detail") or ""),
                         device if isinstance(device, str) else None)
        else:
            raise Reject("auth_protocol", f"unexpected auth status {str(status)[:20]!r}")
