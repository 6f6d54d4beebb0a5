"""Benchmarks of a real stack (issue 2 "Done when" 6): started with `medsec up`, driven over TCP and MQTT.

Every figure comes from one run on this machine, so ratios compare like with like.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import resource
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from Crypto.Cipher import AES
from paho.mqtt.enums import CallbackAPIVersion

from services.common import authwire, v1
from services.common.adminclient import AdminClient
from services.common.config import Config
from services.common.state import mqtt_password
from services.history import transport as history
from services.stack import control
from tests.support.broker import connack
from tests.support.proc import free_config
from tests.support.stack import medsec

READING = {"Temp": 36.6, "TempMcu": 23.7, "PulseSig": 2.123, "Acel_x": 0.0, "Acel_y": 0.0,
           "Acel_z": 1.0, "TempMpu": 23.4}


@dataclass
class Device:
    id: str
    key: str
    iv: str

    def wire(self, temp: float = 36.6) -> bytes:
        cipher = AES.new(self.key.encode(), AES.MODE_ECB)
        text = v1.format_reading({**READING, "Temp": temp})
        return v1.encrypt(cipher.encrypt, self.iv.encode(), text, "chained")


def make_devices(prefix: str, n: int) -> list[Device]:
    """Devices with distinct credentials (derived from the id, so reruns reuse them)."""
    devices = []
    for i in range(n):
        device_id = f"{prefix}-{i:05d}"
        digest = hashlib.sha256(device_id.encode()).hexdigest()
        devices.append(Device(device_id, digest[:16], digest[16:32]))
    return devices


def import_devices(config: Config, devices: list[Device]) -> None:
    for start in range(0, len(devices), 2000):
        chunk = devices[start:start + 2000]
        body = "\n".join(json.dumps({"id": d.id, "key": d.key, "iv": d.iv}) for d in chunk).encode()
        status, answer = AdminClient.from_config(config).request("POST", "/devices/import", raw=body)
        if status not in (200, 201):
            raise RuntimeError(f"import failed: {status} {answer}")


@dataclass
class Counter:
    """A dashboard-account subscriber that timestamps every message per device."""

    config: Config
    topic: str = "Pico/+/json"
    arrivals: dict[str, list[float]] = field(default_factory=dict)
    total: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._watchers: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[float]]] = {}
        self._ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:8]}",
                        protocol=mqtt.MQTTv311)
        c.username_pw_set("dashboard", mqtt_password(self.config, "dashboard"))
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self._ready.set()
        c.on_connect = lambda cl, *a: cl.subscribe(self.topic, 1)
        c.connect(self.config.host, self.config.mqtt_port)
        c.loop_start()
        self.client = c
        if not self._ready.wait(10):
            raise RuntimeError("bench subscriber could not subscribe")

    def _on_message(self, client, userdata, msg) -> None:
        now = time.perf_counter()
        device = msg.topic.split("/")[1]
        with self._lock:
            self.arrivals.setdefault(device, []).append(now)
            self.total += 1
            watcher = self._watchers.pop(device, None)
        if watcher is not None:
            loop, future = watcher
            with contextlib.suppress(RuntimeError):  # its asyncio.run is over (the wait gave up)
                loop.call_soon_threadsafe(_resolve, future, now)

    def first_arrival(self, device: str) -> asyncio.Future[float]:
        """A future of the time `device`'s first message arrived, for a coroutine to wait on.
        (1,000 coroutines polling every millisecond took more CPU than the gateway they measured.)"""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        with self._lock:
            if self.arrivals.get(device):
                future.set_result(self.arrivals[device][0])
            else:
                self._watchers[device] = (loop, future)
        return future

    def wait_total(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.total >= n:
                return True
            time.sleep(0.01)
        return False

    def reset(self) -> None:
        with self._lock:
            self.arrivals.clear()
            self.total = 0
            self._watchers.clear()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def cpu_seconds(pids: list[int]) -> float:
    """CPU time the processes have used so far, every thread's (ended ones too), to the nanosecond:
    each one's CPU-time clock (clock_getcpuclockid). /proc/<pid>/stat counts in clock ticks of 10 ms,
    4 % of the ~250 ms a service spends in one leg of the throughput run."""
    return sum(time.clock_gettime(_cpu_clock(pid)) for pid in pids)


def _cpu_clock(pid: int) -> int:
    # Linux's id of a process's CPU-time clock (MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED));
    # Python has clock_gettime but not clock_getcpuclockid.
    return (~pid << 3) | 2


def system_calls(pid: int) -> tuple[int, int]:
    """The read-like and write-like system calls `pid` has made so far (/proc/<pid>/io)."""
    fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields["syscr"]), int(fields["syscw"])


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def service_pids(config: Config, names: tuple[str, ...]) -> dict[str, int]:
    return {p.name: p.pid for p in control.processes(config) if p.name in names}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- scenarios -------------------------------------------------------------------------------

async def paced(count: int, interval: float) -> AsyncIterator[int]:
    """Yield `count` times, `interval` seconds apart on a fixed schedule (0: as fast as possible)."""
    next_at = time.perf_counter()
    for n in range(count):
        if interval:
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at += interval
        yield n


async def _stream(config: Config, device: Device, count: int, interval: float, sent: list[float]) -> None:
    reader, writer = await asyncio.open_connection(config.host, config.proxy_port)
    wire = device.wire()
    async for _ in paced(count, interval):
        sent.append(time.perf_counter())
        writer.write(wire)
        await writer.drain()
    await asyncio.sleep(0)
    writer.close()


def stream(config: Config, counter: Counter, devices: list[Device], count: int, interval: float,
           timeout: float) -> dict:
    """Each device sends `count` readings (`interval` apart, 0 = as fast as it can)."""
    counter.reset()
    sent: dict[str, list[float]] = {d.id: [] for d in devices}

    async def run() -> None:
        await asyncio.gather(*(_stream(config, d, count, interval, sent[d.id]) for d in devices))

    start = time.perf_counter()
    asyncio.run(run())
    expected = len(devices) * count
    counter.wait_total(expected, timeout)
    elapsed = max(max(v) for v in counter.arrivals.values()) - start if counter.arrivals else float("nan")
    latencies = []
    for device_id, times in sent.items():
        for t_sent, t_recv in zip(times, counter.arrivals.get(device_id, []), strict=False):
            latencies.append(t_recv - t_sent)
    return {
        "readings": counter.total,
        "expected": expected,
        "seconds": elapsed,
        "per_second": counter.total / elapsed if elapsed else 0.0,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def raw_broker(config: Config, counter: Counter, n: int, timeout: float) -> dict:
    """The same number of messages published straight to the broker, counted by the same subscriber."""
    counter.reset()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-raw-{uuid.uuid4().hex[:6]}",
                    protocol=mqtt.MQTTv311)
    c.username_pw_set("publisher", mqtt_password(config, "publisher"))
    c.max_inflight_messages_set(1000)
    c.connect(config.host, config.mqtt_port)
    c.loop_start()
    payload = json.dumps({"device": "raw", **READING}).encode()
    start = time.perf_counter()
    for i in range(n):
        c.publish(f"Pico/raw-{i % 100}/json", payload, qos=1)
    counter.wait_total(n, timeout)
    elapsed = time.perf_counter() - start
    c.loop_stop()
    c.disconnect()
    return {"messages": counter.total, "seconds": elapsed, "per_second": counter.total / elapsed}


def _resolve(future: asyncio.Future[float], when: float) -> None:
    if not future.done():
        future.set_result(when)


async def _first_publish(config: Config, counter: Counter, device: Device, timeout: float) -> float | None:
    arrived = counter.first_arrival(device.id)
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(config.host, config.proxy_port)
    writer.write(device.wire())
    await writer.drain()
    try:
        return await asyncio.wait_for(arrived, timeout) - start
    except TimeoutError:
        return None
    finally:
        writer.close()


def connect_to_first_publish(config: Config, counter: Counter, devices: list[Device]) -> dict:
    counter.reset()
    times = [asyncio.run(_first_publish(config, counter, d, 10)) for d in devices]
    ok = [t for t in times if t is not None]
    return {"devices": len(devices), "median_ms": statistics.median(ok) * 1000 if ok else None,
            "max_ms": max(ok) * 1000 if ok else None, "load": round(os.getloadavg()[0], 2)}


def burst(config: Config, counter: Counter, devices: list[Device], timeout: float,
          bystanders: list[Device] = ()) -> dict:
    """`devices` connect at once and send a reading each; meanwhile, in a process of its own, new
    connections of `bystanders` are identified one at a time over the auth socket: how long a new
    device's identification takes while the burst is being identified."""
    counter.reset()
    ctx = multiprocessing.get_context("spawn")
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    probe = ctx.Process(target=_probe, args=(str(config.auth_socket), list(bystanders), ready, stop, out))
    if bystanders:
        probe.start()
        ready.wait(30)

    async def run() -> list:
        return await asyncio.gather(*(_first_publish(config, counter, d, timeout) for d in devices),
                                    return_exceptions=True)

    start = time.perf_counter()
    results = asyncio.run(run())
    seconds = time.perf_counter() - start
    served = sum(1 for r in results if isinstance(r, float))
    found: dict = {"devices": len(devices), "served": served, "seconds": seconds,
                   "load": round(os.getloadavg()[0], 2)}
    if bystanders:
        stop.set()
        times = out.get(timeout=60)
        probe.join(10)
        found.update(identify_samples=len(times), identify_p50_ms=percentile(times, 0.5) * 1000,
                     identify_p99_ms=percentile(times, 0.99) * 1000)
    return found


def _probe(path: str, devices: list[Device], ready, stop, out) -> None:
    """burst()'s bystander, in its own process (the burst's asyncio loop must not delay it)."""
    ready.set()
    out.put(_identify_rounds(path, devices, 20_000_000, stop))


def _identify_rounds(path: str, devices: list[Device], conn_base: int, until=None) -> list[float]:
    """Round trips of first-reading requests over the real auth socket, one device at a time (each on
    a new connection id, closed after), until `until` (an Event) is set or every device had its turn."""
    import socket

    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    times = []
    buf = bytearray()
    for n, device in enumerate(devices):
        if until is not None and until.is_set():
            break
        conn = conn_base + n
        scan = v1.scan(device.wire())
        request = {"id": n, "op": "v1", "conn": conn, "src": "127.0.0.1:1",
                   "blocks": b"".join(scan.blocks).hex(), "final": False}
        start = time.perf_counter()
        sock.sendall(authwire.encode(request))
        while (answer := next(authwire.messages(buf), None)) is None:
            buf += sock.recv(65536)
        times.append(time.perf_counter() - start)
        if answer.get("status") != "ok":
            raise RuntimeError(f"identification failed: {answer}")
        sock.sendall(authwire.encode({"id": -n - 1, "op": "close", "conn": conn}))
        while next(authwire.messages(buf), None) is None:
            buf += sock.recv(65536)
    sock.close()
    return times


def identification_time(config: Config, devices: list[Device], samples: int = 200) -> dict:
    """Time auth takes to identify a new connection's first reading, over the real auth socket.

    The first request after an import also pays auth's reload of the keys (once per change of the
    key store): it is reported apart (`first_ms`); p50 / p99 are those of the next `samples`."""
    rng = random.Random(1)
    picks = rng.sample(devices, min(samples + 1, len(devices)))
    first, *times = _identify_rounds(str(config.auth_socket), picks, 10_000_000)
    return {"registered": len(devices), "first_ms": first * 1000, "mean_ms": statistics.mean(times) * 1000,
            "p50_ms": percentile(times, 0.5) * 1000, "p99_ms": percentile(times, 0.99) * 1000,
            "load": round(os.getloadavg()[0], 2)}


async def _hold(config: Config, device: Device, period: float, stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection(config.host, config.proxy_port)
    wire = device.wire()
    while not stop.is_set():
        writer.write(wire)
        await writer.drain()
        try:
            await asyncio.wait_for(stop.wait(), period)
        except TimeoutError:
            pass
    writer.close()


def memory_with_connected(config: Config, counter: Counter, devices: list[Device], period: float,
                          pids: dict[str, int], timeout: float = 600) -> dict:
    """One connection per device (ramped up), each sending a reading every `period` seconds.

    Memory is read once every device's first reading has been published.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    counter.reset()
    measured: dict = {}

    async def run() -> None:
        stop = asyncio.Event()
        tasks = []
        start = time.monotonic()
        for i, d in enumerate(devices):
            tasks.append(asyncio.create_task(_hold(config, d, period, stop)))
            if i % 100 == 99:
                await asyncio.sleep(0.1)  # ramp up: about 1,000 new connections a second
        while len(counter.arrivals) < len(devices) and time.monotonic() - start < timeout:
            await asyncio.sleep(0.5)
        measured["connected_and_published"] = len(counter.arrivals)
        measured["seconds_to_all_published"] = time.monotonic() - start
        measured["rss_mib"] = {name: round(rss_mib([pid]), 1) for name, pid in pids.items()}
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())
    measured["total_mib"] = round(sum(measured["rss_mib"].values()), 1)
    measured["devices"] = len(devices)
    return measured


def history_stored(config: Config) -> int:
    """medsec_history_stored_total from the history service's metrics file (0 before it wrote one)."""
    path = config.run_dir / "metrics-history.prom"
    for line in path.read_text().splitlines() if path.exists() else ():
        if line.startswith("medsec_history_stored_total "):
            return int(float(line.split()[1]))
    return 0


def _settle(config: Config, timeout: float = 30.0) -> None:
    deadline, last = time.monotonic() + timeout, -1
    while time.monotonic() < deadline and (now := history_stored(config)) != last:
        last = now
        time.sleep(2.5)  # one metrics period and a half


def stop_history(config: Config) -> None:
    """Stop the history service and end its broker session, for runs that measure the data path
    without it. Stopped, it stays a durable subscriber of Pico/+/json: Mosquitto keeps every
    reading for it (~570 bytes of memory and ~290 of its database, saved every second, a reading),
    and its CPU a reading grew by a fifth over a throughput run (session 20)."""
    control.rpc(config).supervisor.stopProcess("history")
    # A clean session under the same client id discards the stored one (MQTT 3.1.1, 3.1.2.4).
    answer = connack(config, history.ACCOUNT, mqtt_password(config, history.ACCOUNT),
                     client_id=history.CLIENT_ID)
    if answer != "Success":
        raise ConnectionError(f"the broker refused the history account's clean session: {answer}")


def history_effect(config: Config, counter: Counter, fleet: list[Device], per_device: int) -> dict:
    """The history service (issue 17): its CPU per stored reading while the fleet streams flat out,
    and the data path's throughput with it running and with it stopped (it is a subscriber, not
    a stage, so the two should match)."""
    pid = service_pids(config, ("history",))["history"]
    _settle(config)  # what streamed before is stored and counted: not billed to this run
    stored_before, cpu_before = history_stored(config), cpu_seconds([pid])
    with_history = stream(config, counter, fleet, per_device, 0, 120)
    target = stored_before + with_history["readings"]
    deadline = time.monotonic() + 120
    while history_stored(config) < target and time.monotonic() < deadline:
        time.sleep(0.5)  # the metrics file is rewritten every 2 s
    stored = history_stored(config) - stored_before
    cpu = cpu_seconds([pid]) - cpu_before
    control.rpc(config).supervisor.stopProcess("history")
    try:
        without = stream(config, counter, fleet, per_device, 0, 120)
    finally:
        control.start_program(config, "history")
    rate = without["per_second"]
    return {
        "stored": stored, "published": with_history["readings"],
        "cpu_ms_per_reading": cpu * 1000 / max(1, stored),
        "with_per_second": with_history["per_second"], "without_per_second": without["per_second"],
        "ratio": with_history["per_second"] / rate if rate else float("nan"),
    }


# --- the whole run -----------------------------------------------------------------------------

def start_stack(**settings: object) -> tuple[Config, dict[str, str]]:
    home = Path(tempfile.mkdtemp(prefix="medsec-bench-"))
    # Capacity, not policy: each device here sends one reading again and again, flat out, which
    # the per-device rate limit and the v1 replay check (issue 14) would rightly drop. A
    # benchmark whose readings all differ turns the replay check back on (`replay_window`).
    config = free_config(home, **{"device_max_rate": 0, "replay_window": 0, **settings})
    env = config.to_env()
    medsec(env, "up", "--detach", "--no-nodered")
    return config, env


def run_all(quick: bool = False) -> dict:
    config, env = start_stack()
    results: dict = {}
    try:
        pids = service_pids(config, ("proxy", "auth", "publisher", "mosquitto", "keyadmin"))
        services = [pids[n] for n in ("proxy", "auth", "publisher")]
        counter = Counter(config)
        sizes = (10, 1000) if quick else (10, 1000, 10000)
        registered: list[Device] = []
        results["identification"] = {}
        for size in sizes:
            more = make_devices(f"reg{size}", size - len(registered))
            import_devices(config, more)
            registered += more
            results["identification"][size] = identification_time(config, registered)
        # Everything below runs with the largest fleet registered (a big hospital's).
        n_devices, per_device = (20, 50) if quick else (100, 200)
        results["devices"] = n_devices
        fleet = registered[:n_devices]
        stream(config, counter, fleet, 2, 0, 60)  # warm-up: every device identified once
        cpu_before = cpu_seconds(services)
        results["throughput"] = stream(config, counter, fleet, per_device, 0, 120)
        cpu_after = cpu_seconds(services)
        readings = max(1, results["throughput"]["readings"])
        results["cpu_ms_per_reading"] = (cpu_after - cpu_before) * 1000 / readings
        results["history"] = history_effect(config, counter, fleet, per_device)
        results["latency_at_10hz"] = stream(config, counter, fleet, 10 if quick else 30, 0.1, 60)
        results["raw_broker"] = raw_broker(config, counter, results["throughput"]["expected"], 120)
        results["ratio_vs_raw_broker"] = (results["throughput"]["per_second"]
                                          / results["raw_broker"]["per_second"])
        results["connect_to_first_publish"] = connect_to_first_publish(
            config, counter, registered[n_devices:n_devices + 20])
        burst_size = 200 if quick else 1000
        results["burst"] = burst(config, counter, registered[-burst_size:], 120,
                                 registered[n_devices + 20:-burst_size])
        if not quick:
            results["memory_10k"] = memory_with_connected(config, counter, registered, 10.0, pids)
        counter.close()
    finally:
        medsec(env, "down", check=False)
    return results


def latency_only(quick: bool = False) -> dict:
    """The latency figures alone (identification at each fleet size, first publish, burst), without
    the throughput and memory runs: `python -m benchmarks.stackbench [--quick]`."""
    config, env = start_stack()
    results: dict = {"identification": {}}
    try:
        counter = Counter(config)
        registered: list[Device] = []
        for size in (10, 1000) if quick else (10, 1000, 10000):
            more = make_devices(f"reg{size}", size - len(registered))
            import_devices(config, more)
            registered += more
            results["identification"][size] = identification_time(config, registered)
        results["connect_to_first_publish"] = connect_to_first_publish(config, counter, registered[:20])
        burst_size = 200 if quick else 1000
        results["burst"] = burst(config, counter, registered[-burst_size:], 120, registered[20:-burst_size])
        counter.close()
    finally:
        medsec(env, "down", check=False)
    return results


if __name__ == "__main__":
    import sys

    print(json.dumps(latency_only("--quick" in sys.argv[1:]), indent=1))
