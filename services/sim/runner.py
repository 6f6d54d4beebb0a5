"""The simulator's engine: N devices, each its own TCP connection, on one asyncio loop.

Each device task connects, writes readings at its rate (or as fast as the
connection takes them with rate 0), feeds whatever the gateway sends back to
its device object (v2 acks and refusals), and reconnects with exponential
back-off (random in [b/2, b], doubling up to max_backoff) when the connection
fails or the gateway closes it. The back-off starts over after a v2 connection
that brought a verified answer (a v1 one: that lasted a while); a v2 device
never drops a reading because a connection ended, only on a verified refusal. Stopping cancels
the tasks, which close their connections.
"""
from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from services.sim.devices import SimDevice
from services.sim.vitals import Vitals

# A device writing flat out gives the loop back after this long, so N devices starve no timer.
YIELD_EVERY = 0.001
OnSend = Callable[[str, bytes, float], None]  # (device id, frame, wall-clock time of the write)


@dataclass
class SimOptions:
    host: str = "127.0.0.1"
    port: int = 9998
    rate: float = 1.0  # readings per second per device; 0 = as fast as the connection takes them
    duration: float | None = None  # seconds; None = until stopped
    connect_timeout: float = 5.0
    min_backoff: float = 0.1
    max_backoff: float = 5.0
    # A connection with readings waiting and no answer for this long is ended and opened again
    # (a half-open link or a stalled gateway); protocols that answer only. 0 = never.
    ack_timeout: float = 5.0
    seed: int | None = None  # same seed, same vitals (tests)


@dataclass
class SimStats:
    devices: int = 0
    sent: int = 0  # readings written to the gateway
    acked: int = 0  # readings the gateway acknowledged (protocols with acknowledgements)
    resent: int = 0  # unacknowledged readings sent again after a reconnect
    ack_timeouts: int = 0  # connections ended because nothing was answered for ack_timeout s
    errors: int = 0  # failed connects, connections closed by the gateway, write failures
    reconnects: int = 0
    connected: int = 0  # devices connected right now
    elapsed: float = 0.0
    acknowledging: bool = False  # does this protocol acknowledge readings at all?

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def raise_fd_limit(wanted: int) -> None:
    """Many devices need many sockets: lift the soft limit towards the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Simulation:
    def __init__(self, devices: list[SimDevice], options: SimOptions, on_send: OnSend | None = None) -> None:
        self.devices = devices
        self.options = options
        self.on_send = on_send
        self.stats = SimStats(devices=len(devices), acknowledging=any(d.acknowledged for d in devices))
        self._stop: asyncio.Event | None = None
        self._started = 0.0
        self._deadline: float | None = None

    def stop(self) -> None:
        """Ask the simulation to end (safe from signal handlers on the loop)."""
        if self._stop is not None:
            self._stop.set()

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def elapsed(self) -> float:
        return time.monotonic() - self._started if self._started else 0.0

    async def run(self, progress: Callable[[SimStats], None] | None = None,
                  progress_interval: float = 1.0) -> SimStats:
        self._stop = asyncio.Event()
        self._started = time.monotonic()
        if self.options.duration is not None:
            self._deadline = asyncio.get_running_loop().time() + self.options.duration
        raise_fd_limit(len(self.devices) + 256)
        tasks = [asyncio.create_task(self._device(device, self._rng(device)), name=f"sim-{device.id}")
                 for device in self.devices]
        reporter = asyncio.create_task(self._report(progress, progress_interval)) if progress else None
        everything = tasks + ([reporter] if reporter else [])
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.duration):
                    await self._stop.wait()
        finally:
            self._stop.set()  # device loops also check it, should a cancellation get lost
            for task in everything:
                task.cancel()
            done, _ = await asyncio.wait(everything, timeout=5)
            for task in done:
                if not task.cancelled():
                    task.exception()  # retrieved: a device that failed must not print a warning at exit
            self.stats.elapsed = self.elapsed()
            self.stats.connected = 0
        return self.stats

    def _rng(self, device: SimDevice) -> random.Random:
        seed = self.options.seed
        return random.Random(f"{seed}:{device.id}") if seed is not None else random.Random()

    async def _report(self, progress: Callable[[SimStats], None], interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.stats.elapsed = self.elapsed()
            progress(self.stats)

    async def _device(self, device: SimDevice, rng: random.Random) -> None:
        options, stats = self.options, self.stats
        vitals = Vitals(rng)
        backoff = options.min_backoff
        connected_before = False
        while not self._stopping():
            try:
                async with asyncio.timeout(options.connect_timeout):
                    reader, writer = await asyncio.open_connection(options.host, options.port)
            except (OSError, TimeoutError):
                stats.errors += 1
                await asyncio.sleep(backoff * rng.uniform(0.5, 1.0))
                backoff = min(backoff * 2, options.max_backoff)
                continue
            if connected_before:
                stats.reconnects += 1
            connected_before = True
            stats.connected += 1
            began = time.monotonic()
            try:
                await self._session(device, vitals, rng, reader, writer)
            except (OSError, ConnectionError):
                pass  # the gateway went away mid-write: counted below, then reconnect
            finally:
                stats.connected -= 1
                writer.close()
            if self._stopping():
                return
            stats.errors += 1  # a session only ends on its own when the connection failed or was closed
            if device.acknowledged:
                # v2: a verified answer on that connection means the gateway is there: come back soon.
                # One that ended without any (accepted and closed: throttled, full, restarting) backs off.
                if device.answered:
                    backoff = options.min_backoff
            elif time.monotonic() - began > 5 * backoff:
                backoff = options.min_backoff  # it worked for a while: start over quickly
            await asyncio.sleep(backoff * rng.uniform(0.5, 1.0))
            backoff = min(backoff * 2, options.max_backoff)

    async def _session(self, device: SimDevice, vitals: Vitals, rng: random.Random,
                       reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Write readings until the connection fails or is closed. Returns when it is over."""
        stats, on_send = self.stats, self.on_send
        read_task = asyncio.create_task(self._read(device, reader), name=f"sim-{device.id}-read")
        try:
            resend = device.unacked()
            stats.resent += len(resend)
            first = device.greeting() + b"".join(resend)
            if first:
                writer.write(first)
            rate = self.options.rate
            period = 1.0 / rate if rate > 0 else 0.0
            loop = asyncio.get_running_loop()
            # Devices start at random points of their period, so N devices do not write in lockstep.
            next_at = loop.time() + rng.uniform(0.0, period)
            last_yield = loop.time()
            ack_timeout = self.options.ack_timeout
            while not read_task.done() and not self._stopping():
                if ack_timeout and device.stalled(time.monotonic(), ack_timeout):
                    stats.ack_timeouts += 1
                    return
                if period:
                    delay = next_at - loop.time()
                    if delay > 0:
                        await asyncio.wait([read_task], timeout=delay)
                        if read_task.done() or self._stopping():
                            break
                    next_at = max(next_at + period, loop.time() - period)  # no burst after a stall
                frame = device.encode(vitals.sample(time.time()))
                writer.write(frame)
                stats.sent += 1
                if on_send is not None:
                    on_send(device.id, frame, time.time())
                if ack_timeout and device.acknowledged:
                    try:  # a gateway that stopped reading altogether is stalled too
                        async with asyncio.timeout(ack_timeout):
                            await writer.drain()
                    except TimeoutError:
                        stats.ack_timeouts += 1
                        return
                else:
                    await writer.drain()  # waits only when the gateway is not keeping up
                if not period and loop.time() - last_yield > YIELD_EVERY:
                    if self._deadline is not None and loop.time() >= self._deadline:
                        # A busy loop runs timers late; flat-out writers end the run on time themselves.
                        self.stop()
                    await asyncio.sleep(0)  # writing flat out: let the other devices and timers run
                    last_yield = loop.time()
        finally:
            # Not awaited: awaiting here could swallow the cancellation that stops the simulation.
            read_task.cancel()

    async def _read(self, device: SimDevice, reader: asyncio.StreamReader) -> None:
        """Feed the gateway's bytes to the device until it closes the connection."""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                self.stats.acked += device.on_data(data)
        except (OSError, ConnectionError):
            return
        except ValueError:
            return  # the device refused what the gateway sent (e.g. a forged acknowledgement): reconnect


async def simulate(devices: list[SimDevice], options: SimOptions, on_send: OnSend | None = None,
                   progress: Callable[[SimStats], None] | None = None) -> SimStats:
    return await Simulation(devices, options, on_send).run(progress)


def run(devices: list[SimDevice], options: SimOptions, on_send: OnSend | None = None) -> SimStats:
    """Run the devices for options.duration seconds on a fresh event loop; returns the counts."""
    if options.duration is None:
        raise ValueError("run() needs a duration; use Simulation.run() to run until stopped")
    return asyncio.run(simulate(devices, options, on_send))
