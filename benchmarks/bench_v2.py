"""Protocol v2 beside v1, in one run on one stack (issue 4 "Done when" 5).

    python -m benchmarks.bench_v2 [--quick]

Measures, for each protocol: readings/s end to end (devices as fast as they
can, counted on Pico/+/json), latency from the device's write to the
subscriber (p50 / p99), for v2 also to the device's acknowledgement, and the
time auth takes to identify a new connection's first reading with 10 and
10,000 devices registered (v1: one trial block decryption per registered key;
v2: one key id lookup).
"""
from __future__ import annotations

import asyncio
import random
import socket
import statistics
import sys
import time

from benchmarks import stackbench
from benchmarks.results_file import run_and_report
from benchmarks.stackbench import Counter, percentile
from services.common import authwire, v1, v2, v2device
from services.common.config import Config
from services.keystore.credentials import make_secret
from services.keystore.models import NewDevice
from services.keystore.sqlite import SQLiteKeyStore
from services.sim.devices import Credentials
from services.sim.v2 import V2Device, seq_counter
from tests.support.stack import medsec

READING = v1.format_reading(stackbench.READING)


def register_v2(config: Config, prefix: str, n: int) -> list[V2Device]:
    """Straight into the key store (the API's one-by-one POSTs would dominate the run)."""
    new = [NewDevice(f"{prefix}-{i:05d}", "v2", make_secret("v2")) for i in range(n)]
    store = SQLiteKeyStore.open(config)
    try:
        for start in range(0, n, 2000):
            store.import_many(new[start:start + 2000], actor="bench")
    finally:
        store.close()
    return [V2Device(Credentials(d.id, "v2", d.secret), counter=seq_counter(None)) for d in new]


def _ask(sock: socket.socket, buf: bytearray, request: dict) -> dict:
    sock.sendall(authwire.encode(request))
    while (answer := next(authwire.messages(buf), None)) is None:
        buf += sock.recv(65536)
    return answer


def identification_v2(config: Config, devices: list[V2Device], samples: int = 200) -> dict:
    """Auth's answer time for a device's first frame (lookup, counter, verify, decrypt, validate)."""
    picks = random.Random(2).sample(devices, min(samples, len(devices)))
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(config.auth_socket))
    buf, times = bytearray(), []
    for n, dev in enumerate(picks):
        frame = dev.seal(READING)
        request = {"id": n, "op": "v2", "conn": 20_000_000 + n, "src": "127.0.0.1:1",
                   "frame": authwire.b64_text(frame)}
        start = time.perf_counter()
        answer = _ask(sock, buf, request)
        times.append(time.perf_counter() - start)
        if answer.get("status") != "ok":
            raise RuntimeError(f"v2 identification failed: {answer}")
    sock.close()
    return {"registered": len(devices), "mean_ms": statistics.mean(times) * 1000,
            "p99_ms": percentile(times, 0.99) * 1000}


async def read_answers(reader: asyncio.StreamReader, frames: list[bytes],
                       chunks: list[tuple[float, bytes]]) -> None:
    """What the gateway writes back, each read with its arrival time, until it holds an answer to
    each of `frames`: exactly an ack's bytes for each (nothing to take apart during the run), or,
    past that, as many answers (a refusal is one byte longer). Answers are taken apart and their
    tags verified after the run: that is the device's work, and the simulated devices share the
    gateway's two cores."""
    want = len(frames) * ack_size(frames[0]) if frames else 0
    got = 0
    while got < want or (got > want and len(answers_in(chunks)) < len(frames)):
        data = await reader.read(65536)
        if not data:
            return
        chunks.append((time.perf_counter(), data))
        got += len(data)


def ack_size(frame: bytes) -> int:
    """The size of the ack of a reading frame: the frame's header and a tag."""
    return v2device.header_size(frame[3]) + v2device.ACK_BODY


def answers_in(chunks: list[tuple[float, bytes]]) -> list[tuple[float, int, int, bytes]]:
    """The answers in `chunks` (read_answers): (arrival time, kind, seq, bytes) each."""
    data = b"".join(chunk for _, chunk in chunks)
    ends, total = [], 0  # (offset where a read ended, its arrival time)
    for when, chunk in chunks:
        total += len(chunk)
        ends.append((total, when))
    out, offset, i = [], 0, 0
    with memoryview(data) as view:
        while (head := v2device.parse_header(view[offset:], (v2device.ACK, v2device.REFUSAL))) is not None:
            kind, _, seq, size, length = head
            end = offset + size + length
            if end > len(data):
                break
            while ends[i][0] < end:
                i += 1
            out.append((ends[i][1], kind, seq, data[offset:end]))
            offset = end
    return out


async def _stream_v2(config: Config, frames: list[bytes], sent: list[float],
                     chunks: list[tuple[float, bytes]], interval: float = 0.0) -> None:
    """Writes frames sealed beforehand (`sent`: when each went) and keeps what comes back. Sealing
    and verifying are the device's work, in pure Python here (services/common/ccm.py, ~15 µs
    each): during the run they took the gateway's cores, and v1's devices write ready-made bytes.
    Flat out (`interval` 0) the acks are read after the last frame, as in the throughput
    benchmark: a loop wake per ack read was the simulated devices' CPU, on the gateway's cores."""
    reader, writer = await asyncio.open_connection(config.host, config.proxy_port)
    if not interval:
        writer.transport.pause_reading()
    answers = asyncio.create_task(read_answers(reader, frames, chunks))
    queue = iter(frames)
    async for _ in stackbench.paced(len(frames), interval):
        sent.append(time.perf_counter())
        writer.write(next(queue))
        await writer.drain()
    writer.transport.resume_reading()
    try:
        await asyncio.wait_for(answers, 60)
    finally:
        writer.close()


def ack_latencies(device: V2Device, frames: list[bytes], sent: list[float],
                  chunks: list[tuple[float, bytes]]) -> list[float]:
    """Each reading's time from its write to its ack, once every answer proved to be an ack of
    this device's (its tag verified) for exactly the readings written."""
    written = {v2.read(frame)[0].seq: when for frame, when in zip(frames, sent, strict=True)}
    latencies = []
    for when, _, seq, answer in answers_in(chunks):
        kind, verified, _, used = device.session.read_answer(answer)
        if kind != v2device.ACK or verified != seq or used != len(answer) or seq not in written:
            raise RuntimeError(f"{device.id}: an answer that is no ack of a reading: {answer.hex()}")
        latencies.append(when - written.pop(seq))
    if written:
        raise RuntimeError(f"{device.id}: {len(written)} readings without an ack")
    return latencies


def stream_v2(config: Config, counter: Counter, devices: list[V2Device], count: int, timeout: float,
              interval: float = 0.0) -> dict:
    counter.reset()
    frames = {d.id: [d.seal(READING) for _ in range(count)] for d in devices}
    sent: dict[str, list[float]] = {d.id: [] for d in devices}
    chunks: dict[str, list[tuple[float, bytes]]] = {d.id: [] for d in devices}

    async def run() -> None:
        await asyncio.gather(*(_stream_v2(config, frames[d.id], sent[d.id], chunks[d.id], interval)
                               for d in devices))

    start = time.perf_counter()
    asyncio.run(run())
    expected = len(devices) * count
    counter.wait_total(expected, timeout)
    elapsed = max(max(v) for v in counter.arrivals.values()) - start if counter.arrivals else float("nan")
    ack_latency = [t for d in devices for t in ack_latencies(d, frames[d.id], sent[d.id], chunks[d.id])]
    latencies = [t_recv - t_sent for dev_id, times in sent.items()
                 for t_sent, t_recv in zip(times, counter.arrivals.get(dev_id, []), strict=False)]
    return {"readings": counter.total, "expected": expected, "acked": len(ack_latency), "seconds": elapsed,
            "per_second": counter.total / elapsed if elapsed else 0.0,
            "p50_ms": percentile(latencies, 0.5) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000,
            "ack_p50_ms": percentile(ack_latency, 0.5) * 1000,
            "ack_p99_ms": percentile(ack_latency, 0.99) * 1000}


def run_all(quick: bool = False) -> dict:
    config, env = stackbench.start_stack()
    results: dict = {"identification": {"v1": {}, "v2": {}}}
    try:
        counter = Counter(config)
        sizes = (10, 1000) if quick else (10, 10_000)
        reg_v1: list[stackbench.Device] = []
        reg_v2: list[V2Device] = []
        for size in sizes:
            more = [stackbench.Device(f"b1-{i:05d}", f"k{i:015d}", f"i{i:015d}")
                    for i in range(len(reg_v1), size)]
            stackbench.import_devices(config, more)
            reg_v1 += more
            reg_v2 += register_v2(config, f"b2r{size}", size - len(reg_v2))
            results["identification"]["v1"][size] = stackbench.identification_time(config, reg_v1)
            results["identification"]["v2"][size] = identification_v2(config, reg_v2)
        n_devices, per_device = (20, 50) if quick else (100, 200)
        results["devices"] = n_devices
        fleet_v1, fleet_v2 = reg_v1[:n_devices], reg_v2[:n_devices]
        stackbench.stream(config, counter, fleet_v1, 2, 0, 60)  # warm-up
        stream_v2(config, counter, fleet_v2, 2, 60)
        results["v1"] = stackbench.stream(config, counter, fleet_v1, per_device, 0, 120)
        results["v2"] = stream_v2(config, counter, fleet_v2, per_device, 120)
        # Latency below saturation: 20 devices at 10 readings/s each.
        paced = 10 if quick else 30
        results["v1_10hz"] = stackbench.stream(config, counter, fleet_v1[:20], paced, 0.1, 60)
        results["v2_10hz"] = stream_v2(config, counter, fleet_v2[:20], paced, 60, interval=0.1)
        counter.close()
    finally:
        medsec(env, "down", check=False)
    return results


def report(r: dict) -> str:
    a, b, c, d = r["v1"], r["v2"], r["v1_10hz"], r["v2_10hz"]
    lines = [
        "| measure | v1 | v2 |",
        "|---|---|---|",
        f"| readings/s end to end ({r['devices']} devices as fast as they can) | {a['per_second']:,.0f} "
        f"({a['readings']}/{a['expected']}) | {b['per_second']:,.0f} ({b['readings']}/{b['expected']}, "
        f"{b['acked']} acked) |",
        f"| latency under saturation, device write -> subscriber, p50 / p99 | {a['p50_ms']:.1f} / "
        f"{a['p99_ms']:.1f} ms | {b['p50_ms']:.1f} / {b['p99_ms']:.1f} ms |",
        f"| latency at 10 readings/s x 20 devices, device write -> subscriber, p50 / p99 | "
        f"{c['p50_ms']:.1f} / {c['p99_ms']:.1f} ms | {d['p50_ms']:.1f} / {d['p99_ms']:.1f} ms |",
        f"| latency at 10 readings/s x 20 devices, device write -> acknowledgement, p50 / p99 | (no acks) | "
        f"{d['ack_p50_ms']:.1f} / {d['ack_p99_ms']:.1f} ms |",
        f"| bytes on the wire per reading | {len(stackbench.Device('x', 'k' * 16, 'i' * 16).wire())} | "
        f"{v2.header_size(4) + len(READING) + v2.TAG} |",
    ]
    for size in r["identification"]["v1"]:
        i1, i2 = r["identification"]["v1"][size], r["identification"]["v2"][size]
        lines.append(f"| first reading identified, {int(size):,} devices registered (mean / p99) | "
                     f"{i1['mean_ms']:.2f} / {i1['p99_ms']:.2f} ms | "
                     f"{i2['mean_ms']:.2f} / {i2['p99_ms']:.2f} ms |")
    return "\n".join(lines)


def main() -> int:
    return run_and_report(__doc__, "v2.json", run_all, report)


if __name__ == "__main__":
    sys.exit(main())
