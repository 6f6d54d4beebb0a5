"""The auth socket: a thin asyncio transport around AuthService on a 0600 Unix socket.

Lifecycle: start (refuse if another auth listens on the socket), serve, and on
SIGTERM stop accepting, close client connections, flush counters, remove the
socket, exit 0. Requests on one connection are answered in order. The
complete requests of one read are taken in batches of up to BATCH: the first
readings of new connections in a batch are identified together, in one pass
over the v1 keys (AuthService.identify_batch_steps, in steps of a millisecond or
two between which the other clients are served), and the batch's answers are
written at once.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from services.auth.bursts import BurstDetector
from services.auth.identify import Identified
from services.auth.service import AuthService, weight
from services.common import authwire
from services.common.config import Config, service_config
from services.common.logs import Throttled, kv, setup
from services.common.state import StateError
from services.keystore.backends import open_store
from services.keystore.models import KeyStoreError

FLUSH_INTERVAL = 1.0
SEEN_CHUNK = 100  # devices' counters a write: ~2 ms
READ_CHUNK = 1 << 16
# Readings' requests answered as one batch at most (first readings of v1 connections are
# identified together: one pass over the v1 keys each).
BATCH = 256
# Answering a batch lets the loop turn after this many requests (other clients: another proxy's
# readings): ~4 ms of v1 readings, ~12 ms of v2 frames. Each stretch is one commit, and a device's
# replay window is written once a stretch (keystore/sql.py): at 32, twenty devices flat out wrote
# each window about once a frame (issue 13). The answers of a batch leave together at its end
# anyway, so a longer stretch delays no answer of the proxy that asked. A count, not a clock: wall
# time counted the waits for PostgreSQL's answers (a millisecond or more each between containers)
# and cut stretches to a write or two, each paying BEGIN and COMMIT, so auth fell behind the
# devices' resends after an outage; a thread's CPU clock is a system call that took a sixth of
# auth's CPU (py-spy, issue 13).
STRETCH = 128


class Metrics(Protocol):
    candidates: int

    def prometheus(self) -> str: ...


class Handler(Protocol):
    """What the transport asks of the auth logic (AuthService; tests give stand-ins)."""

    metrics: Metrics

    def refresh(self, force: bool = False) -> None: ...
    def identify_batch_steps(
        self, requests: list[dict[str, Any]], client: Any = None
    ) -> Iterator[list[Identified | None] | None]: ...
    def handle(self, request: dict[str, Any], client: Any = None,
               identified: Identified | None = None) -> dict[str, Any]: ...
    def drop_client(self, client: Any) -> None: ...
    def flush(self) -> None: ...


class AuthServer:
    def __init__(self, service: Handler, path: Path, log: logging.Logger,
                 metrics_path: Path | None = None) -> None:
        self._service = service
        self._path = path
        self._log = log
        self._store_away = Throttled(log)  # one line a second, not one per request
        self._metrics_path = metrics_path
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._ids = itertools.count(1)
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        if _listening(self._path):
            raise StateError(f"another auth service is listening on {self._path}")
        self._path.unlink(missing_ok=True)
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._service.refresh(force=True)  # keys loaded before anyone can connect
        # Bind and listen on a private temporary name, then rename: the socket appears only when it
        # accepts connections, and never with wider permissions than 0600.
        tmp = self._path.with_name(f".{self._path.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(tmp))
        finally:
            os.umask(old)
        os.chmod(tmp, 0o600)
        sock.listen(1024)
        self._server = await asyncio.start_unix_server(self._client, sock=sock, limit=READ_CHUNK)
        os.replace(tmp, self._path)
        self._log.info(kv(event="listening", socket=self._path, v1_keys=self._service.metrics.candidates))

    async def serve(self) -> None:
        flusher = asyncio.create_task(self._flush_loop(), name="auth-flush")
        await self._stopping.wait()
        flusher.cancel()
        await self._shutdown()

    def stop(self) -> None:
        self._stopping.set()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._clients):
            writer.close()
        self._flush()
        self._path.unlink(missing_ok=True)
        self._log.info(kv(event="stopped"))

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            while self._service.flush(SEEN_CHUNK):
                await asyncio.sleep(0)
            self._write_metrics()

    def _flush(self) -> None:
        self._service.flush()
        self._write_metrics()

    def _write_metrics(self) -> None:
        if self._metrics_path is not None:
            try:
                tmp = self._metrics_path.with_name(self._metrics_path.name + ".tmp")
                tmp.write_text(self._service.metrics.prometheus())
                os.replace(tmp, self._metrics_path)
            except OSError as exc:
                self._log.warning(kv(event="metrics_write_failed", error=exc))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = next(self._ids)
        self._clients.add(writer)
        buf = bytearray()
        try:
            while True:
                chunk = await reader.read(READ_CHUNK)
                if not chunk:
                    break
                buf += chunk
                while True:
                    batch = _take_batch(buf)
                    if not batch:
                        break
                    writer.write(await self._answers(batch, client))
                    await writer.drain()
        except authwire.AuthWireError as exc:
            self._log.warning(kv(event="bad_message", client=client, detail=str(exc)[:200]))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._service.drop_client(client)
            self._clients.discard(writer)
            writer.close()


    async def _answers(self, batch: list[dict], client: int) -> bytes:
        """The encoded answers of `batch`, in order, seeing the store as of one look at its start;
        first readings of new connections are identified together in one pass over the keys, in
        steps: the loop serves the other clients in between (a burst of new connections on one
        proxy must not hold another's readings for its whole pass)."""
        with self._service.one_look():
            identified: list[Identified | None] = [None] * len(batch)
            try:
                for result in self._service.identify_batch_steps(batch, client):
                    if result is None:
                        await asyncio.sleep(0)
                    else:
                        identified = result
            except KeyStoreError:  # the store is away: each request is answered (and logged) below
                identified = [None] * len(batch)
            except Exception as exc:  # then every request takes the one-at-a-time path
                self._log.exception(kv(event="internal_error", client=client, error=type(exc).__name__))
                identified = [None] * len(batch)
            out = bytearray()
            todo = collections.deque(zip(batch, identified, strict=True))
            while todo:
                answered = self._answer_stretch(todo, client)
                for message, answer in answered:
                    if "id" in message:  # a notification (v2acked, close) has none: nobody waits for it
                        out += authwire.encode(answer)
                if todo:  # a batch of first readings: ~0.1 ms each to decode
                    await asyncio.sleep(0)
            return bytes(out)

    def _answer_stretch(self, todo: collections.deque[tuple[dict, Identified | None]],
                        client: int) -> list[tuple[dict, dict]]:
        """Answer about STRETCH readings' requests from the front of `todo` (taking them off it),
        with no wait in between: the key store writes of the stretch are committed together
        before any of its answers leaves. A failed commit turns its v2 frames' answers into
        keystore_unavailable (the device sends again: nothing was written); the others stand."""
        answered: list[tuple[dict, dict]] = []
        readings = 0
        try:
            with self._service.committed():
                while todo and readings < STRETCH:
                    message, pre = todo.popleft()
                    answered.append((message, self._answer(message, client, pre)))
                    readings += weight(message)
        except Exception as exc:
            self._store_away.warning(event="keystore_unavailable", client=client, error=str(exc)[:200])
            if not answered and todo:  # it failed before a request was taken: one goes, never a spin
                message = todo.popleft()[0]
                return [(message, _unavailable(message))]
            return [(message, _unavailable(message) if message.get("op") == "v2" else answer)
                    for message, answer in answered]
        return answered

    def _answer(self, message: dict, client: int, identified: Identified | None = None) -> dict:
        """Every request gets its answer, in order, even if the service fails on it."""
        try:
            if identified is None:
                return self._service.handle(message, client)
            return self._service.handle(message, client, identified)
        except KeyStoreError as exc:  # the store is away (a PostgreSQL restart): one line, no traceback
            self._store_away.warning(event="keystore_unavailable", client=client, error=str(exc)[:200])
            return _unavailable(message)
        except Exception as exc:  # a bug must cost one reading, not every connection of the proxy
            self._log.exception(kv(event="internal_error", client=client, error=type(exc).__name__))
            return {"id": message.get("id"), "status": "rejected", "reason": "internal_error",
                    "detail": "auth failed on this request; see its log", "device": None}


def _take_batch(buf: bytearray) -> list[dict]:
    """The messages at the front of buf, taken out of it, up to BATCH readings' worth (a v2
    request with the frames of a connection's read counts each frame)."""
    batch: list[dict] = []
    readings = 0
    for message in authwire.messages(buf):
        batch.append(message)
        readings += weight(message)
        if readings >= BATCH:
            break
    return batch


def _unavailable(message: dict) -> dict:
    return {"id": message.get("id"), "status": "rejected", "reason": "keystore_unavailable",
            "detail": "the key store cannot be reached; try again later", "device": None}


def _listening(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


async def run(config: Config, log: logging.Logger) -> None:
    store = open_store(config)
    bursts = BurstDetector(config.throttle_failures or 10, config.throttle_window)
    service = AuthService(store, log, bursts=bursts, max_blocks=config.max_reading_blocks)
    server = AuthServer(service, config.auth_socket, log, config.run_dir / "metrics-auth.prom")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    try:
        await server.start()
        await server.serve()
    finally:
        store.close()


def raise_priority(levels: int, log: logging.Logger) -> None:
    """Run `levels` nice levels above the process that started auth (MEDSEC_AUTH_PRIORITY). Called
    before any thread starts: on Linux a nice level is a thread's, and new threads inherit it."""
    if levels <= 0:
        return
    before = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, max(-20, before - levels))
    except PermissionError:
        log.warning(kv(event="priority_not_raised", nice=before,
                       detail="needs root or CAP_SYS_NICE; MEDSEC_AUTH_PRIORITY=0 does not ask"))
        return
    log.info(kv(event="priority_raised", nice=os.getpriority(os.PRIO_PROCESS, 0), was=before))


def main() -> int:
    log = setup("auth")
    config = service_config("auth")
    raise_priority(config.auth_priority, log)
    try:
        asyncio.run(run(config, log))
    except (StateError, ValueError, KeyStoreError) as exc:
        log.error(kv(event="start_failed", error=str(exc)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
