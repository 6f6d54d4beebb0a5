"""Run a paho client inside the asyncio loop instead of paho's own network thread.

Why: with a network thread, every publish and every PUBACK crosses threads,
and the two threads fight over the GIL (each socket call waits for the other
thread's switch interval). In the loop, publishes made in one loop iteration go
out in one write and PUBACKs complete futures directly.

paho's documented external-loop hooks: the socket is registered with the loop
for reading (loop_read) and, while paho has bytes queued, for writing
(loop_write); loop_misc runs once a second for keepalive. This driver also
reconnects with back-off, which paho's own loop would otherwise do.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import paho.mqtt.client as mqtt

from services.common.logs import kv

log = logging.getLogger("medsec.proxy.bus")

STABLE = 5.0  # seconds a broker connection must last to count as healthy


class AsyncioBusLoop:
    def __init__(self, client: mqtt.Client, loop: asyncio.AbstractEventLoop, host: str, port: int,
                 keepalive: int = 15, min_delay: float = 0.05, max_delay: float = 2.0) -> None:
        self.client = client
        self.loop = loop
        self.host, self.port, self.keepalive = host, port, keepalive
        self.min_delay, self.max_delay = min_delay, max_delay
        self._sock: Any = None
        self._opened_at = 0.0
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # paho connects with a blocking socket call in the loop's thread: keep the worst case short.
        client.connect_timeout = 1.0
        client.on_socket_open = self._on_open
        client.on_socket_close = self._on_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    def start(self) -> None:
        self._task = self.loop.create_task(self._run(), name="bus-loop")

    async def stop(self, timeout: float = 1.0) -> None:
        """Send DISCONNECT (after whatever is queued) and stop reconnecting."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sock is not None:
            self.client.disconnect()
            deadline = self.loop.time() + timeout
            while self._sock is not None and self.loop.time() < deadline:
                await asyncio.sleep(0.01)
        if self._sock is not None:
            self._on_close(self.client, None, self._sock)

    async def _run(self) -> None:
        delay = self.min_delay
        first = True
        while True:
            if self._sock is None:
                if not first:
                    # A connection that lasted resets the back-off; one the broker drops at once
                    # (refused credentials, broker restarting) makes the next try wait longer.
                    if self.loop.time() - self._opened_at > STABLE:
                        delay = self.min_delay
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_delay)
                try:
                    if first:
                        first = False
                        self.client.connect(self.host, self.port, self.keepalive)
                    else:
                        self.client.reconnect()
                except OSError as exc:  # refused, unreachable, timed out
                    log.debug(kv(event="bus_connect_failed", detail=exc.__class__.__name__))
                    continue
            self._lost.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._lost.wait()
            if self._sock is not None:
                self.client.loop_misc()

    # --- paho's socket hooks (called in the loop's thread) ---
    def _on_open(self, client: Any, userdata: Any, sock: Any) -> None:
        self._sock = sock
        self._opened_at = self.loop.time()
        self.loop.add_reader(sock, self._read)

    def _read(self) -> None:
        self.client.loop_read()

    def _on_close(self, client: Any, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(sock)
            self.loop.remove_writer(sock)
        self._sock = None
        if not self._stopping:
            self._lost.set()

    def _on_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        self.loop.add_writer(sock, self.client.loop_write)

    def _on_unregister_write(self, client: Any, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_writer(sock)
