"""The proxy server: startup, serve, shutdown (stop accepting, drain with a deadline, cancel)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import time
from typing import Any

from services.common.config import Config
from services.common.logs import kv
from services.proxy import proxyproto, trust
from services.proxy.authclient import AuthClient
from services.proxy.connection import Connection
from services.proxy.metrics import Metrics, write_atomic
from services.proxy.output import Output, event_payload
from services.proxy.state import ProxyState
from services.proxy.throttle import Throttle

log = logging.getLogger("medsec.proxy")

METRICS_INTERVAL = 2.0


class ProxyServer:
    def __init__(self, config: Config, shutdown_timeout: float = 5.0) -> None:
        self.config = config
        self.shutdown_timeout = shutdown_timeout
        self.instance = secrets.token_hex(4)
        self.should_exit = asyncio.Event()
        self.state: ProxyState | None = None
        self._server: asyncio.Server | None = None
        self._metrics_task: asyncio.Task[None] | None = None
        self.metrics_path = config.run_dir / "metrics-proxy.prom"
        self._last_refusal_report = float("-inf")
        self._suppressed = 0
        self._last_untrusted_report = float("-inf")
        self._untrusted = 0
        # Config.from_env already refused a bad MEDSEC_PROXY_TRUSTED.
        self.trusted = trust.parse_trusted(config.proxy_trusted)

    # --- lifecycle ---
    async def serve(self) -> None:
        await self.startup()
        await self.should_exit.wait()
        await self.shutdown()

    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        metrics = Metrics()
        output = Output(cfg, f"proxy-{self.instance}", loop, metrics, self.on_key_event)
        throttle = Throttle(cfg.throttle_failures, cfg.throttle_window, cfg.throttle_cooldown,
                            cfg.throttle_max_cooldown)
        auth = AuthClient(cfg.auth_socket, wait=cfg.auth_wait)
        self.state = ProxyState(cfg, auth, output, metrics, throttle, self.instance)
        output.start()
        self._server = await asyncio.start_server(
            self._accept, cfg.host, cfg.proxy_port, backlog=4096, limit=65536)
        self._metrics_task = asyncio.create_task(self._write_metrics(), name="metrics")
        log.info(kv(event="listening", host=cfg.host, port=cfg.proxy_port, instance=self.instance,
                    max_connections=cfg.max_connections, idle_timeout=cfg.idle_timeout,
                    reading_timeout=cfg.reading_timeout, device_max_rate=cfg.device_max_rate,
                    replay_window=cfg.replay_window))
        if cfg.proxy_protocol:
            log.info(kv(event="proxy_protocol", trusted=",".join(str(n) for n in self.trusted),
                        detail="PROXY headers accepted only from these peers"
                        + ("" if cfg.proxy_trusted.strip() else " (MEDSEC_PROXY_TRUSTED unset: loopback)")))

    async def shutdown(self) -> None:
        state = self.state
        assert state is not None and self._server is not None
        log.info(kv(event="shutting_down", connections=len(state.connections)))
        self._server.close()  # stop accepting
        deadline = asyncio.get_running_loop().time() + self.shutdown_timeout
        for conn in list(state.connections.values()):
            conn.kill("shutdown", "proxy stopping")
        tasks = [c.task for c in state.connections.values() if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.shutdown_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        # One budget for draining and flushing, so a supervisor's stop timeout is never exceeded.
        flushed = await state.output.flush(max(0.5, deadline - asyncio.get_running_loop().time()))
        if self._metrics_task is not None:
            self._metrics_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._metrics_task
        await state.auth.close()
        await state.output.stop()
        with contextlib.suppress(OSError):
            self.metrics_path.unlink()
        log.info(kv(event="stopped", flushed=flushed, readings=state.metrics.readings_accepted))

    # --- accept ---
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state = self.state
        assert state is not None
        peer = writer.get_extra_info("peername") or ("?", 0)
        if self.should_exit.is_set():
            writer.close()
            return
        if self.config.proxy_protocol:
            if not trust.trusted(str(peer[0]), self.trusted):
                self._untrusted_peer(writer, peer)
                return
            peer = await self._proxy_header(reader, writer, peer)
            if peer is None:
                return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if state.throttle.blocked(str(peer[0]), now):
            # A refused address may be a NAT with good devices behind it: its connections
            # start one per grace period instead of all being closed (probation.py).
            start = state.probation.slot(str(peer[0]), now)
            if start is None:
                state.metrics.refused["throttled"] += 1
                log.debug(kv(event="refused", src=f"{peer[0]}:{peer[1]}", reason="throttled"))
                writer.close()
                return
            state.metrics.probation += 1
            if start > now:
                await asyncio.sleep(start - now)
            if self.should_exit.is_set():
                writer.close()
                return
            now = loop.time()
        if len(state.connections) >= self.config.max_connections:
            state.metrics.refused["too_many_connections"] += 1
            writer.close()
            # A flood must not become a flood of log lines and events: at most one a second.
            self._suppressed += 1
            if now - self._last_refusal_report >= 1.0:
                detail = f"limit {self.config.max_connections}; {self._suppressed} refused since last report"
                log.warning(kv(event="refused", src=f"{peer[0]}:{peer[1]}", reason="too_many_connections",
                               detail=detail))
                state.output.publish_event(None, event_payload(
                    "rejected", None, "too_many_connections", detail,
                    (str(peer[0]), int(peer[1])), None, time.time()))
                self._last_refusal_report, self._suppressed = now, 0
            return
        conn = Connection(state, reader, writer, (str(peer[0]), int(peer[1])))
        state.connections[conn.id] = conn
        state.metrics.connections_total += 1
        conn.task = asyncio.current_task()
        if conn.task is not None:
            conn.task.set_name(f"conn-{conn.id}")
        await conn.run()

    def _untrusted_peer(self, writer: asyncio.StreamWriter, peer: tuple) -> None:
        """A PROXY header names the device's address: only the balancer may send one."""
        assert self.state is not None
        self.state.metrics.refused["untrusted_proxy"] += 1
        writer.close()
        now = asyncio.get_running_loop().time()
        self._untrusted += 1
        if now - self._last_untrusted_report < 1.0:  # at most one line and event a second
            return
        detail = (f"peer {peer[0]} is not in MEDSEC_PROXY_TRUSTED; {self._untrusted} refused since "
                  "last report")
        log.warning(kv(event="refused", src=f"{peer[0]}:{peer[1]}", reason="untrusted_proxy", detail=detail))
        self.state.output.publish_event(None, event_payload(
            "rejected", None, "untrusted_proxy", detail, (str(peer[0]), int(peer[1])), None, time.time()))
        self._last_untrusted_report, self._untrusted = now, 0

    async def _proxy_header(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            peer: tuple) -> tuple | None:
        """The device's address from the balancer's PROXY v2 header; None (connection closed) if
        the header is missing, malformed or late: nothing else may speak on this port."""
        try:
            async with asyncio.timeout(self.config.reading_timeout):
                fixed = await reader.readexactly(proxyproto.FIXED_LENGTH)
                addresses = await reader.readexactly(proxyproto.address_length(fixed))
            return proxyproto.source(fixed, addresses) or peer
        except (proxyproto.ProxyHeaderError, asyncio.IncompleteReadError, TimeoutError, OSError) as exc:
            assert self.state is not None
            if isinstance(exc, asyncio.IncompleteReadError) and not exc.partial:
                writer.close()  # connected and left without a byte: the balancer's TCP health check
                return None
            self.state.metrics.refused["bad_proxy_header"] += 1
            detail = exc.detail if isinstance(exc, proxyproto.ProxyHeaderError) else (
                f"no complete PROXY header within {self.config.reading_timeout:g} s")
            log.warning(kv(event="refused", src=f"{peer[0]}:{peer[1]}", reason="bad_proxy_header",
                           detail=detail))
            writer.close()
            return None

    # --- key events (revocation) ---
    def on_key_event(self, event: dict[str, Any]) -> None:
        state = self.state
        if state is None:
            return
        kind, device = event.get("event"), event.get("device")
        if not isinstance(device, str):
            return
        if kind == "revoked":
            state.revoked[device] = time.monotonic()
            conns = list(state.sessions.get(device, ()))
            log.info(kv(event="revoked", device=device, connections=len(conns)))
            for conn in conns:
                conn.kill("revoked", "device key revoked")
        elif kind in ("added", "imported"):
            state.revoked.pop(device, None)

    async def _write_metrics(self) -> None:
        state = self.state
        assert state is not None
        while True:
            state.metrics.tick()
            try:
                text = state.metrics.render(len(state.connections), len(state.devices))
                write_atomic(self.metrics_path, text)
            except OSError as exc:
                log.warning(kv(event="metrics_write_failed", detail=exc.__class__.__name__))
            await asyncio.sleep(METRICS_INTERVAL)


def install_signals(server: ProxyServer) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.should_exit.set)
