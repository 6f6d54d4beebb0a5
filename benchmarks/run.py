"""`make bench`: run every benchmark once and print the figures (also saved as JSON).

    python -m benchmarks.run [--quick]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks import bench_envelope, bench_v2, stackbench, throughput

ORIGINAL = {  # figures of the original design, as its authors reported them
    "cpu_ms_per_reading": 0.4,
    "connect_to_first_publish_ms": 1000,
    "burst_failures_from": 20,
    "memory_mib_per_device": 24,
}


def report(r: dict) -> str:
    tp, lat, raw = r["throughput"], r["latency_at_10hz"], r["raw_broker"]
    lines = [
        "| measure | medsec | reference |",
        "|---|---|---|",
        f"| v1 readings/s end to end ({r['devices']} devices as fast as they can; subscriber on "
        "Pico/+/json) | "
        f"{tp['per_second']:,.0f} ({tp['readings']}/{tp['expected']} delivered) "
        f"| raw broker: {raw['per_second']:,.0f} msg/s; ratio {r['ratio_vs_raw_broker']:.2f} |",
        f"| latency under saturation, device write to subscriber, p50 / p99 | {tp['p50_ms']:.1f} / "
        f"{tp['p99_ms']:.1f} ms | |",
        f"| latency at 10 readings/s per device, p50 / p99 | {lat['p50_ms']:.1f} / "
        f"{lat['p99_ms']:.1f} ms | |",
        f"| CPU per reading (proxy + auth + publisher) | {r['cpu_ms_per_reading']:.3f} ms "
        f"| original: ~{ORIGINAL['cpu_ms_per_reading']} ms in its per-device server alone "
        f"(ratio {r['cpu_ms_per_reading'] / ORIGINAL['cpu_ms_per_reading']:.2f}) |",
    ]
    h = r.get("history")
    if h:
        lines.append(f"| history service: CPU per stored reading; data path readings/s with it running / "
                     f"stopped | {h['cpu_ms_per_reading']:.3f} ms ({h['stored']}/{h['published']} stored); "
                     f"{h['with_per_second']:,.0f} / {h['without_per_second']:,.0f} | ratio "
                     f"{h['ratio']:.2f} (a subscriber, not a stage: ~1) |")
    c = r["connect_to_first_publish"]
    lines.append(f"| connect to first publish, new device (median / max) | {c['median_ms']:.1f} / "
                 f"{c['max_ms']:.1f} ms (load {c.get('load', '?')}) | original: "
                 f"~{ORIGINAL['connect_to_first_publish_ms']} ms |")
    b = r["burst"]
    lines.append(f"| burst of {b['devices']} devices connecting at once | {b['served']} served in "
                 f"{b['seconds']:.1f} s | original lost devices from {ORIGINAL['burst_failures_from']} on |")
    if "memory_10k" in r:
        m = r["memory_10k"]
        per = m["total_mib"] * 1024 / max(1, m["devices"])
        lines.append(f"| memory, {m['devices']:,} connected devices, 1 reading / 10 s | "
                     f"{m['total_mib']:.0f} MiB "
                     f"in all ({per:.1f} KiB per device; {m['rss_mib']}) | original: "
                     f"{ORIGINAL['memory_mib_per_device']} MiB per device |")
    for size, ident in r["identification"].items():
        lines.append(f"| identify a new v1 connection, {int(size):,} devices registered (p50 / p99) | "
                     f"{ident['p50_ms']:.2f} / {ident['p99_ms']:.2f} ms (load {ident['load']}) "
                     f"| the first after the import (auth reloads the keys): {ident['first_ms']:.0f} ms |")
    if "identify_p99_ms" in b:
        lines.append(f"| identify a new v1 connection while the {b['devices']} connect, "
                     f"{max(map(int, r['identification'])):,} devices registered (p50 / p99) | "
                     f"{b['identify_p50_ms']:.2f} / {b['identify_p99_ms']:.2f} ms "
                     f"({b['identify_samples']} identified; load {b['load']}) | |")
    e = r.get("envelope")
    if e:
        lines.append(f"| sealed parameter envelope, {e['payload_mb']} MB (RSA-3072 + AES-256-GCM): "
                     "seal / unseal "
                     f"| {e['seal_mb_s']:.0f} / {e['unseal_mb_s']:.0f} MB/s | 1 KB: {e['seal_ms_1kb']} / "
                     f"{e['unseal_ms_1kb']} ms (RSA-bound) |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller fleets, for a fast check")
    args = parser.parse_args()
    started = time.time()
    results = stackbench.run_all(quick=args.quick)
    results["v1_v2"] = bench_v2.run_all(quick=args.quick)
    results["paths"] = throughput.run_all(quick=args.quick)
    size, repeat = (2.0, 3) if args.quick else (10.0, 5)
    results["envelope"] = bench_envelope.run(size_mb=size, repeat=repeat)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=1))
    print(report(results))
    print("\nv1 beside v2, on one stack:\n")
    print(bench_v2.report(results["v1_v2"]))
    print("\nThroughput and CPU per reading, a dashboard on Pico/# (issue 13):\n")
    print(throughput.report(results["paths"]))
    print(f"\n(benchmark took {time.time() - started:.0f} s; raw figures in {out / 'latest.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
