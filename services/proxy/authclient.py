"""The proxy's client of the auth service: one Unix-socket connection, pipelined requests.

Each request gets an id and a future; a reader task completes futures as the
answers arrive. When auth goes away every request in flight fails with
AuthUnavailable (its connection closes, nothing is published). The next
request reconnects, trying for a few seconds while auth restarts, so an auth
restart heals by itself.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from pathlib import Path
from typing import Any

from services.common import authwire
from services.common.logs import kv
from services.proxy.errors import AuthUnavailable

log = logging.getLogger("medsec.proxy.auth")


# A dead auth is noticed at once (its socket closes); this only bounds a hung one. It is long
# because a burst of new devices queues identifications (each tries every registered v1 key).
REQUEST_TIMEOUT = 30.0
RETRY_INTERVAL = 0.1
# Readings of one device connection asked together (v1 readings, v2 frames: one round trip for
# the whole ones of a read): a device streaming flat out does not wait a round trip per reading.
PIPELINE = 16
# Entries of one v2acked notification at most (each under 1 KB with 64 seqs: well under
# authwire.MAX_MESSAGE).
ACKS_PER_MESSAGE = 256


class AuthClient:
    def __init__(self, path: Path, timeout: float = REQUEST_TIMEOUT, connect_timeout: float = 1.0,
                 wait: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.wait = wait
        self._ids = itertools.count(1)
        # Requests in flight, oldest first: id -> (future, deadline). One timer fails those past
        # their deadline (issue 13: asyncio.timeout made and cancelled a timer per request_many).
        self._pending: dict[int, tuple[asyncio.Future[dict[str, Any]], float]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._attempt: asyncio.Task[asyncio.StreamWriter] | None = None
        self.connected_once = False
        self._out = bytearray()  # requests of this loop turn: one write for all (issue 13)
        self._out_writer: asyncio.StreamWriter | None = None
        self._acked: list[list[Any]] = []  # acks written this loop turn: [conn, kid, seqs]

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one request and wait for its answer; AuthUnavailable if auth cannot answer."""
        return (await self.request_many([message]))[0]

    async def request_many(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send requests together and wait for all their answers, in order; AuthUnavailable if
        auth cannot answer one of them."""
        writer = await self._ensure_connected()
        loop = asyncio.get_running_loop()
        futures: dict[int, asyncio.Future[dict[str, Any]]] = {}
        deadline = loop.time() + self.timeout
        for message in messages:
            rid = next(self._ids)
            futures[rid] = future = loop.create_future()
            self._pending[rid] = (future, deadline)
            self._write(writer, authwire.encode({**message, "id": rid}))
        if self._sweeper is None:
            self._sweeper = loop.call_at(deadline, self._sweep)
        try:
            return [await future for future in futures.values()]
        except TimeoutError:
            raise AuthUnavailable(f"no answer from auth within {self.timeout:g} s") from None
        except (ConnectionError, OSError) as exc:
            raise AuthUnavailable(f"auth connection lost: {exc.__class__.__name__}") from None
        finally:
            for rid, future in futures.items():
                self._pending.pop(rid, None)
                if future.done() and not future.cancelled():
                    future.exception()  # one failure is raised above, not one per request logged

    def _sweep(self) -> None:
        """Fail the requests past their deadline (TimeoutError); then wait for the oldest left."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for future, deadline in self._pending.values():  # oldest first: the deadlines grow
            if deadline > now:
                self._sweeper = loop.call_at(deadline, self._sweep)
                return
            if not future.done():
                future.set_exception(TimeoutError())

    def send(self, message: dict[str, Any]) -> None:
        """A notification (ops close, v2acked): no id, so auth answers nothing."""
        if not self.connected:
            return  # a new auth session knows nothing to forget
        assert self._writer is not None
        self._write(self._writer, authwire.encode(message))

    def acked(self, conn: int, kid: str, seqs: list[int]) -> None:
        """Tell auth that the acks of `seqs` (key id `kid`, hex) were written (op v2acked). The acks
        of a loop turn, every connection's, go in one notification (issue 13: the PUBACK of a bus
        message completes the acks of many connections at once, and a message for each was a JSON
        message to write here and to read in auth per reading or two)."""
        if not self.connected:
            return  # a new auth session loads the window from the store: nothing to mark
        if not self._acked:
            asyncio.get_running_loop().call_soon(self._send_acked)
        self._acked.append([conn, kid, seqs])

    def _send_acked(self) -> None:
        acks, self._acked = self._acked, []
        for start in range(0, len(acks), ACKS_PER_MESSAGE):
            self.send({"op": "v2acked", "acks": acks[start:start + ACKS_PER_MESSAGE]})

    def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Queue for the end of this loop turn: under load many connections ask auth in the same
        turn, and one write (one system call, one wake-up of auth) carries all their requests."""
        if self._out_writer is not writer:  # a new connection: what was queued for the old one is void
            self._out.clear()
            self._out_writer = writer
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush, writer)
        self._out += data

    def _flush(self, writer: asyncio.StreamWriter) -> None:
        if self._out_writer is writer and self._out and not writer.is_closing():
            writer.write(bytes(self._out))
        if self._out_writer is writer:
            self._out.clear()

    async def _ensure_connected(self) -> asyncio.StreamWriter:
        """The live connection, or one made now; all callers share one attempt.

        Auth restarting under supervisord is back within a second or two: an attempt keeps
        trying for `wait` seconds (MEDSEC_AUTH_WAIT) so the readings that arrive meanwhile
        go through instead of closing their connections.
        """
        if self.connected:
            assert self._writer is not None
            return self._writer
        if self._attempt is None or self._attempt.done():
            self._attempt = asyncio.create_task(self._connect(), name="auth-connect")
            # Retrieved here too, in case every caller was cancelled meanwhile.
            self._attempt.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(self._attempt)

    async def _connect(self) -> asyncio.StreamWriter:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        while True:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    reader, writer = await asyncio.open_unix_connection(
                        str(self.path), limit=authwire.MAX_MESSAGE)
                break
            except (OSError, TimeoutError) as exc:
                if loop.time() + RETRY_INTERVAL >= deadline:
                    why = f"cannot reach auth at {self.path.name}: {exc.__class__.__name__}"
                    raise AuthUnavailable(why) from None
                await asyncio.sleep(RETRY_INTERVAL)
        self._writer = writer
        self._reader_task = asyncio.create_task(self._read_answers(reader, writer), name="auth-reader")
        log.info(kv(event="auth_connected", reconnect=self.connected_once))
        self.connected_once = True
        return writer

    async def _read_answers(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = bytearray()
        why = "auth closed the connection"
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                buf += data
                for message in authwire.messages(buf):
                    entry = self._pending.get(message.get("id"))  # type: ignore[arg-type]
                    if entry is not None and not entry[0].done():
                        entry[0].set_result(message)
        except authwire.AuthWireError as exc:
            why = f"bad answer from auth: {exc}"
        except (ConnectionError, OSError) as exc:
            why = f"auth connection error: {exc.__class__.__name__}"
        except asyncio.CancelledError:
            why = "shutting down"
            raise
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
            self._fail_pending(why)
            if why != "shutting down":
                log.warning(kv(event="auth_lost", detail=why, in_flight=len(self._pending)))

    def _fail_pending(self, why: str) -> None:
        for future, _ in list(self._pending.values()):
            if not future.done():
                future.set_exception(AuthUnavailable(why))

    async def close(self) -> None:
        if self._attempt is not None and not self._attempt.done():
            self._attempt.cancel()
        task, self._reader_task = self._reader_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
