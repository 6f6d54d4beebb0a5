"""Throughput and CPU per reading of the data paths (issue 13), in one run on one stack.

    python -m benchmarks.throughput [--quick]

Devices write readings as fast as the gateway takes them; a dashboard-like subscriber on
`Pico/#` (benchmarks/subscriber.py, its own process) takes the whole public tree at QoS 1. For
v1 with 20 and 100 devices and v2 beside it, it reports readings/s, lost and reordered readings
per device (each reading's Temp is a per-device counter), and the CPU each process spent per
reading: proxy, auth, publisher (the gateway) and Mosquitto, from their CPU-time clocks. v1 and v2 take
turns, six legs each (LEGS), so a drift of the machine's speed weighs on both alike, and v2 is
compared with v1 pair of legs by pair (paired_ratios). v1 readings pass the replay check and the
rate limit's check as in a default install (AS_USERS_RUN). The raw-broker
ceiling publishes, for each reading, the same public messages the publisher sends for one,
straight to Mosquitto with the publisher's own MQTT client, counted by the same subscriber.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import stackbench
from benchmarks.bench_v2 import answers_in, read_answers, register_v2
from benchmarks.results_file import run_and_report
from benchmarks.stackbench import Device, cpu_seconds, service_pids, system_calls
from services.common import v1, v2device
from services.common.config import Config
from services.common.mqttclient import BROKER_INFLIGHT, MqttClient, TopicTable
from services.common.state import mqtt_password
from services.publisher.service import PublisherService
from services.publisher.topics import qos_for
from services.sim.v2 import V2Device
from tests.support.stack import medsec

GATEWAY = ("proxy", "auth", "publisher")
PROCESSES = (*GATEWAY, "mosquitto")
FIRST_MARK = 30.0  # Temp of a device's first reading; each next one is 0.001 higher
# The stacks here check every v1 reading as users' do: the replay check as configured by default
# (every reading here differs, as a real sensor's do), and the per-device rate limit, at a rate
# and burst no device reaches (flat out is above any real device's rate: its default would drop).
AS_USERS_RUN = {"replay_window": Config.replay_window, "device_max_rate": 1e9, "device_burst": 10**9}
_runs = itertools.count(1)  # each run_fleet's readings differ from every earlier run's


def reading_text(n: int, run: int = 0) -> bytes:
    """Reading `n` of a device in run `run`: Temp counts the readings, PulseSig tells the runs apart."""
    marks = {"Temp": FIRST_MARK + n / 1000, "PulseSig": 1 + run / 1000}
    return v1.format_reading({**stackbench.READING, **marks})


class Subscriber:
    """benchmarks/subscriber.py in its own process, driven over its stdin/stdout."""

    def __init__(self, config: Config, topic: str = "Pico/#") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.subscriber", config.host, str(config.mqtt_port), "dashboard",
             topic, "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parent.parent)
        self._send(mqtt_password(config, "dashboard"))
        if not self._answer().get("ready"):
            raise RuntimeError("bench subscriber did not start")

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def _answer(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("bench subscriber exited")
        return json.loads(line)

    def reset(self) -> None:
        self._send("reset")
        self._answer()

    def wait(self, readings: int, timeout: float) -> dict:
        self._send(f"wait {readings} {timeout}")
        return self._answer()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def tally(got: dict, devices: list[str], per_device: int, started: float) -> dict:
    """Readings/s from the first write to the last arrival; lost and reordered per device."""
    lost = reordered = duplicated = 0
    last = started
    for device in devices:
        arrivals = got["arrivals"].get(device, [])
        marks = [round((m - FIRST_MARK) * 1000) for _, m in arrivals]
        lost += per_device - len(set(marks))
        duplicated += len(marks) - len(set(marks))
        reordered += sum(1 for a, b in zip(marks, marks[1:], strict=False) if b < a)
        if arrivals:
            last = max(last, arrivals[-1][0])
    seconds = last - started
    return {"devices": len(devices), "readings": got["readings"], "expected": len(devices) * per_device,
            "lost": lost, "reordered": reordered, "duplicated": duplicated,
            "messages_per_reading": (got["readings"] + got["others"]) / max(1, got["readings"]),
            "seconds": seconds, "per_second": got["readings"] / seconds if seconds > 0 else 0.0}


# --- the devices ---------------------------------------------------------------------------

async def _v1_device(config: Config, wires: list[bytes], sent: list[float]) -> None:
    _, writer = await asyncio.open_connection(config.host, config.proxy_port)
    for wire in wires:
        sent.append(time.perf_counter())
        writer.write(wire)
        await writer.drain()
    await asyncio.sleep(0)
    writer.close()


async def _v2_device(config: Config, frames: list[bytes], chunks: list[tuple[float, bytes]]) -> None:
    """Writes its frames flat out, then reads the gateway's answers, counted after the run
    (bench_v2.read_answers). Reading, taking apart and verifying the acks is the device's work, on
    its own CPU in the field; here the simulated devices share the gateway's two cores, and an
    event-loop wake-up per ack read during the run was ~1 us of them a reading. The socket
    keeps the acks meanwhile (a leg's are tens of KB; the gateway's writes do not wait)."""
    reader, writer = await asyncio.open_connection(config.host, config.proxy_port)
    writer.transport.pause_reading()
    try:
        for frame in frames:
            writer.write(frame)
            await writer.drain()
        writer.transport.resume_reading()
        await asyncio.wait_for(read_answers(reader, frames, chunks), 120)
    finally:
        writer.close()


def run_fleet(config: Config, sub: Subscriber, pids: dict[str, int], protocol: str,
              fleet: list, per_device: int, timeout: float = 180) -> dict:
    """Every device sends `per_device` readings flat out; figures from the subscriber and the CPU clocks."""
    run = next(_runs)
    if protocol == "v1":
        payloads = [[d.wire_text(reading_text(n, run)) for n in range(per_device)] for d in fleet]
    else:
        payloads = [[d.session.seal(reading_text(n, run))[1] for n in range(per_device)] for d in fleet]
    chunks: list[list[tuple[float, bytes]]] = [[] for _ in fleet]
    sub.reset()

    async def run() -> None:
        if protocol == "v1":
            await asyncio.gather(*(_v1_device(config, w, []) for w in payloads))
        else:
            await asyncio.gather(*(_v2_device(config, f, c) for f, c in zip(payloads, chunks, strict=True)))

    cpu_before = {name: cpu_seconds([pid]) for name, pid in pids.items()}
    calls_before = system_calls(pids["mosquitto"])
    started = time.perf_counter()
    asyncio.run(run())
    got = sub.wait(len(fleet) * per_device, timeout)
    cpu = {name: cpu_seconds([pid]) - cpu_before[name] for name, pid in pids.items()}
    result = tally(got, [d.id for d in fleet], per_device, started)
    readings = max(1, result["readings"])
    result["broker_calls"] = per_reading(calls_before, system_calls(pids["mosquitto"]), readings)
    result["cpu_ms"] = {name: round(seconds * 1000 / readings, 4) for name, seconds in cpu.items()}
    result["cpu_ms"]["gateway"] = round(sum(result["cpu_ms"][n] for n in GATEWAY), 4)
    if protocol == "v2":
        kinds = [kind for c in chunks for _, kind, _, _ in answers_in(c)]
        result["acked"] = kinds.count(v2device.ACK)
        result["refused"] = kinds.count(v2device.REFUSAL)
    return result


# The order of the legs, half of a size's `per` readings each. The machine's speed drifts within a
# minute here (10-30 % before stop_history; a few % since), and single legs swing by as much: one
# leg each put all of a drift into the v2/v1 ratio, and two each (v1 v2 v2 v1) still let one slow
# leg decide it (issue 13). Legs 2k and 2k+1 are a pair, one of each protocol, seconds apart
# (paired_ratios); the verdict takes the median of six pairs (of four, one pair in a slow phase
# could carry the median across 1: session 20).
LEGS = {20: ("v1", "v2", "v2", "v1", "v2", "v1", "v1", "v2", "v1", "v2", "v2", "v1"),
        100: ("v2", "v1", "v1", "v2", "v1", "v2", "v2", "v1", "v2", "v1", "v1", "v2")}


def paired_ratios(v1_legs: list[dict], v2_legs: list[dict], key: str) -> list[float]:
    """v2's figure over v1's in each pair of legs run back to back (the i-th leg of each: LEGS
    alternates them so). A slow phase of the machine, which lifts every process's CPU per
    reading by a quarter for a few seconds, weighs on one pair, not on one protocol's row."""
    return [b[key] / a[key] for a, b in zip(v1_legs, v2_legs, strict=True) if a[key] > 0]


def neighbour_ratios(order: tuple[str, ...], legs: dict[str, list[dict]], key: str) -> list[float]:
    """The later leg's figure over the earlier's, for each two legs of one protocol run back to
    back in `order` (LEGS has three such): the same code twice, seconds apart,
    so what a pair's v2/v1 may be off by for the machine alone (session 20)."""
    remaining = {protocol: iter(figures) for protocol, figures in legs.items()}
    runs = [(protocol, next(remaining[protocol])) for protocol in order]
    return [b[key] / a[key] for (p, a), (q, b) in itertools.pairwise(runs) if p == q and a[key] > 0]


def combined(runs: list[dict]) -> dict:
    """Runs of one fleet as one: counts added, readings/s over the runs' time together, CPU per
    reading over all their readings."""
    counts = ("readings", "expected", "lost", "reordered", "duplicated", "seconds")
    out = {key: sum(r[key] for r in runs) for key in counts}
    out["devices"] = runs[0]["devices"]
    out["per_second"] = out["readings"] / out["seconds"] if out["seconds"] > 0 else 0.0
    readings = max(1, out["readings"])
    out["messages_per_reading"] = sum(r["messages_per_reading"] * r["readings"] for r in runs) / readings
    out["cpu_ms"] = {name: round(sum(r["cpu_ms"][name] * r["readings"] for r in runs) / readings, 4)
                     for name in runs[0]["cpu_ms"]}
    out["broker_calls"] = [round(sum(r["broker_calls"][i] * r["readings"] for r in runs) / readings, 2)
                           for i in (0, 1)]
    for key in ("acked", "refused"):
        if key in runs[0]:
            out[key] = sum(r[key] for r in runs)
    out["legs"] = [{"per_second": round(r["per_second"], 1), "gateway_ms": r["cpu_ms"]["gateway"]}
                   for r in runs]
    return out


def per_reading(before: tuple[int, int], after: tuple[int, int], readings: int) -> list[float]:
    """Mosquitto's read-like and write-like system calls per reading between two counts (its time
    is mostly system calls: 73 % in the kernel, session 20)."""
    return [round((b - a) / readings, 2) for a, b in zip(before, after, strict=True)]


# --- the raw broker ------------------------------------------------------------------------

def public_set(device: str, n: int) -> list[tuple[str, bytes, bool]]:
    """What the publisher sends for one steady-state reading (no address change)."""
    service = PublisherService(log=logging.getLogger("medsec.bench"))
    body = {"device": device, "ts": time.time(), "seq": None, "gen": 1, "protocol": "v1",
            "values": v1.parse_plaintext(reading_text(n)), "src": ["127.0.0.1", 1], "gw": ["127.0.0.1", 2],
            "uid": "u"}
    topic = f"medsec/ingest/{device}"
    service.handle(topic, json.dumps({**body, "uid": "u0"}).encode())  # first: addresses published
    return service.handle(topic, json.dumps(body).encode())


def raw_broker(config: Config, sub: Subscriber, pids: dict[str, int], devices: int, per_device: int,
               timeout: float = 180) -> dict:
    """The same public messages per reading, published by one client straight to Mosquitto."""
    names = [f"raw-{i:03d}" for i in range(devices)]
    sets = {name: [public_set(name, n) for n in range(per_device)] for name in names}
    sub.reset()

    async def run() -> None:
        stop = asyncio.Event()
        # As the publisher sends them: its QoS per topic (MEDSEC_PUBLIC_QOS, MEDSEC_LEGACY_QOS)
        # within the broker's in-flight limit.
        topics = TopicTable(lambda topic: qos_for(topic, config.public_qos, config.legacy_qos))

        client = MqttClient(config.host, config.mqtt_port, f"bench-raw-{os.getpid()}", "publisher",
                            mqtt_password(config, "publisher"), window=BROKER_INFLIGHT,
                            socket_path=config.broker_socket)  # as the publisher reaches it
        task = asyncio.create_task(client.run(stop))
        while not client.connected:
            await asyncio.sleep(0.01)
        for n in range(per_device):
            for name in names:
                client.send_many(sets[name][n], topics)
            if client.in_flight > 20_000:  # a window, like the publisher's broker
                while client.in_flight > 5_000:
                    await asyncio.sleep(0.001)
            else:
                await asyncio.sleep(0)
        await client.wait_idle(timeout)
        stop.set()
        await task

    cpu_before = cpu_seconds([pids["mosquitto"]])
    calls_before = system_calls(pids["mosquitto"])
    started = time.perf_counter()
    asyncio.run(run())
    got = sub.wait(devices * per_device, timeout)
    result = tally(got, names, per_device, started)
    readings = max(1, result["readings"])
    result["broker_calls"] = per_reading(calls_before, system_calls(pids["mosquitto"]), readings)
    cpu = cpu_seconds([pids["mosquitto"]]) - cpu_before
    result["cpu_ms"] = {"mosquitto": round(cpu * 1000 / readings, 4)}
    return result


# --- the whole run -------------------------------------------------------------------------

class V1Fleet(Device):
    def wire_text(self, text: bytes) -> bytes:
        from Crypto.Cipher import AES
        cipher = AES.new(self.key.encode(), AES.MODE_ECB)
        return v1.encrypt(cipher.encrypt, self.iv.encode(), text, "chained")


def quiet_load() -> float:
    return os.getloadavg()[0]


def run_all(quick: bool = False) -> dict:
    config, env = stackbench.start_stack(**AS_USERS_RUN)
    results: dict = {"load_before": quiet_load()}
    try:
        pids = service_pids(config, (*PROCESSES, "history"))
        # The history service is a subscriber of its own (its cost: make bench's history row).
        stackbench.stop_history(config)
        pids.pop("history", None)
        sub = Subscriber(config)
        pids["bench"] = os.getpid()
        pids["subscriber"] = sub.pid
        sizes = (20, 100)
        per = {20: 250, 100: 50} if quick else {20: 1500, 100: 300}
        v1_fleet = [V1Fleet(d.id, d.key, d.iv) for d in stackbench.make_devices("tp1", max(sizes))]
        stackbench.import_devices(config, v1_fleet)
        v2_fleet: list[V2Device] = register_v2(config, "tp2", max(sizes))
        run_fleet(config, sub, pids, "v1", v1_fleet, 3)  # warm-up: every device identified once
        run_fleet(config, sub, pids, "v2", v2_fleet, 3)
        fleets = {"v1": v1_fleet, "v2": v2_fleet}
        for size in sizes:
            legs: dict[str, list[dict]] = {"v1": [], "v2": []}
            for protocol in LEGS[size]:
                # Each protocol's six legs hold three times `per`: v2 beside v1 is a comparison
                # of two figures each as noisy as the machine, so it gets the longer look.
                legs[protocol].append(run_fleet(config, sub, pids, protocol, fleets[protocol][:size],
                                                per[size] // 2))
            for protocol, runs in legs.items():
                results[f"{protocol}_{size}"] = combined(runs)
        results["raw_20"] = raw_broker(config, sub, pids, 20, per[20])
        sub.close()
    finally:
        medsec(env, "down", check=False)
    results["all_qos2"] = every_topic_at_qos_2(v1_fleet[:20], per[20])
    results["load_after"] = quiet_load()
    return results


def every_topic_at_qos_2(fleet: list[V1Fleet], per_device: int) -> dict:
    """v1 with 20 devices and its raw-broker ceiling again, on a stack with MEDSEC_LEGACY_QOS=2 (the
    seven value topics at QoS 2 like json): what the legacy values at QoS 0 (the default) save."""
    config, env = stackbench.start_stack(legacy_qos=2, **AS_USERS_RUN)
    try:
        pids = service_pids(config, PROCESSES)
        sub = Subscriber(config)
        pids["bench"], pids["subscriber"] = os.getpid(), sub.pid
        stackbench.import_devices(config, fleet)
        run_fleet(config, sub, pids, "v1", fleet, 3)
        out = {"v1_20": run_fleet(config, sub, pids, "v1", fleet, per_device),
               "raw_20": raw_broker(config, sub, pids, 20, per_device)}
        sub.close()
        return out
    finally:
        medsec(env, "down", check=False)


def _row(label: str, t: dict, raw: dict) -> str:
    c = t["cpu_ms"]
    acked = f", {t['acked']} acked" if "acked" in t else ""
    return (f"| {label} | {t['per_second']:,.0f} ({t['readings']}/{t['expected']}{acked}) "
            f"| {t['lost']} / {t['reordered']} / {t['duplicated']} | {t['messages_per_reading']:.1f} "
            f"| {c['proxy']:.3f} / {c['auth']:.3f} / {c['publisher']:.3f} = **{c['gateway']:.3f}**; "
            f"{c['mosquitto']:.3f}; ({c['subscriber']:.3f} / {c['bench']:.3f}) "
            f"| {t['per_second'] / raw['per_second']:.2f} |")


def _raw_row(label: str, raw: dict) -> str:
    return (f"| {label} | {raw['per_second']:,.0f} ({raw['readings']}/{raw['expected']}) "
            f"| {raw['lost']} / {raw['reordered']} / {raw['duplicated']} | {raw['messages_per_reading']:.1f} "
            f"| mosquitto {raw['cpu_ms']['mosquitto']:.3f} | 1.00 |")


def report(r: dict) -> str:
    raw, q = r["raw_20"], r["all_qos2"]
    lines = [
        f"Subscriber on Pico/# (QoS 1); load average {r['load_before']:.1f} before, "
        f"{r['load_after']:.1f} after. The 20 devices run {', '.join(LEGS[20])} and the 100 "
        f"{', '.join(LEGS[100])}; a row adds a protocol's {LEGS[20].count('v1')} legs. Readings/s is "
        "bound mostly by Mosquitto's one thread, then by the two cores all these processes share, the "
        "simulated devices' included (v2's read their acks after their last frame). v2 >= v1 is "
        "judged by pairs of legs run back to back (the i-th of each).",
        "",
        "| run | readings/s | lost / reordered / dup | msgs per reading | CPU ms per reading: proxy / auth / "
        "publisher = gateway; mosquitto; (benchmark's subscriber / simulated devices) "
        "| ratio to raw broker |",
        "|---|---|---|---|---|---|",
    ]
    runs = ("v1_20", "v2_20", "v1_100", "v2_100")
    lines += [_row(f"{key.replace('_', ', ')} devices", r[key], raw) for key in runs]
    lines.append(_raw_row("raw broker, 20 publishers' worth, same messages", raw))
    lines.append(_row("v1, 20 devices, value topics at QoS 2 too (MEDSEC_LEGACY_QOS=2)", q["v1_20"],
                      q["raw_20"]))
    lines.append(_raw_row("raw broker, every message at QoS 2", q["raw_20"]))
    calls = [f"{key.replace('_', ' with ')} devices {_calls(r[key])}" for key in runs]
    lines += ["", f"Mosquitto's system calls a reading, reads / writes (/proc/<pid>/io): {'; '.join(calls)}; "
              f"raw broker {_calls(raw)}."]
    lines += ["", "Targets (issue 13; the default public tree: values at QoS 0, json at QoS 2):"]
    lines += [f"- {'met' if ok else 'NOT met'}: {what}" for what, ok in targets(r)]
    return "\n".join(lines)


def _calls(t: dict) -> str:
    reads, writes = t["broker_calls"]
    return f"{reads:.1f} / {writes:.1f}"


def targets(r: dict) -> list[tuple[str, bool]]:
    out = []
    for size in (20, 100):
        a, b = r[f"v1_{size}"], r[f"v2_{size}"]
        speed = paired_ratios(a["legs"], b["legs"], "per_second")
        cost = paired_ratios(a["legs"], b["legs"], "gateway_ms")
        both = {"v1": a["legs"], "v2": b["legs"]}
        same = [neighbour_ratios(LEGS[size], both, key) for key in ("per_second", "gateway_ms")]
        out += [
            (f"v1, {size} devices: >= 4,500 readings/s, 0 lost, 0 reordered ({a['per_second']:,.0f})",
             a["per_second"] >= 4500 and a["lost"] == 0 and a["reordered"] == 0),
            (f"v1, {size} devices: gateway CPU <= 0.15 ms per reading ({a['cpu_ms']['gateway']:.3f})",
             a["cpu_ms"]["gateway"] <= 0.15),
            (f"v1, {size} devices: broker CPU <= 0.12 ms per reading ({a['cpu_ms']['mosquitto']:.3f})",
             a["cpu_ms"]["mosquitto"] <= 0.12),
            (f"v2 >= v1 with {size} devices, acks included, 0 lost, every reading acked: v2/v1 in each "
             f"pair of legs, readings/s {_ratios(speed)} and gateway CPU {_ratios(cost)} (rows: "
             f"{b['per_second']:,.0f} vs {a['per_second']:,.0f}/s, {b['cpu_ms']['gateway']:.3f} vs "
             f"{a['cpu_ms']['gateway']:.3f} ms; the same protocol's neighbouring legs, for the "
             f"machine's noise: {_listed(same[0])} and {_listed(same[1])})",
             bool(speed) and statistics.median(speed) >= 1 and statistics.median(cost) <= 1
             and b["lost"] == 0 and b.get("acked") == b["expected"]),
        ]
    return out


def _listed(ratios: list[float]) -> str:
    return " ".join(f"{x:.3f}" for x in ratios) or "-"


def _ratios(ratios: list[float]) -> str:
    if not ratios:
        return "(no legs)"
    return f"{_listed(ratios)} (median {statistics.median(ratios):.3f})"


def main() -> int:
    return run_and_report(__doc__, "throughput.json", run_all, report)


if __name__ == "__main__":
    sys.exit(main())
