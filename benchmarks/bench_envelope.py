"""Envelope throughput: seal and unseal MB/s for large files, and messages/s for small ones.

    python -m benchmarks.bench_envelope [--size-mb 10] [--repeat 5]

`run()` returns the figures as a dict (for benchmarks/run.py); `main()` prints them.
A large payload measures AES-256-GCM and SHA-256 (the RSA work is per message); a
small one measures the RSA-OAEP wrap / unwrap and RSA-PSS sign / verify (3072-bit).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from services.common import envelope
from services.dispatch.keys import generate_key


def _timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def run(size_mb: float = 10.0, repeat: int = 5, small_repeat: int = 50) -> dict:
    sender, recipient = generate_key(), generate_key()
    big = os.urandom(int(size_mb * 1024 * 1024))
    seal = lambda payload: envelope.seal(  # noqa: E731
        payload, kind="params", sender="dispatch", recipient="s1", sender_key=sender, recipient_key=recipient)

    def unseal(data: bytes) -> bytes:
        opener = envelope.Opener("s1", recipient, lambda _: sender.public_key())  # fresh nonce cache
        return opener.open(data)[1]

    sealed = seal(big)
    assert unseal(sealed) == big
    seal_t = _timed(lambda: seal(big), repeat)
    open_t = _timed(lambda: unseal(sealed), repeat)
    small = os.urandom(1024)
    small_sealed = seal(small)
    seal_small = _timed(lambda: seal(small), small_repeat)
    open_small = _timed(lambda: unseal(small_sealed), small_repeat)
    mb = len(big) / 1e6
    return {
        "payload_mb": round(mb, 2),
        "envelope_overhead_bytes": len(sealed) - len(big),
        "seal_mb_s": round(mb / statistics.median(seal_t), 1),
        "unseal_mb_s": round(mb / statistics.median(open_t), 1),
        "seal_ms_1kb": round(statistics.median(seal_small) * 1000, 2),
        "unseal_ms_1kb": round(statistics.median(open_small) * 1000, 2),
        "repeat": repeat,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    r = run(args.size_mb, args.repeat)
    if args.json:
        print(json.dumps(r))
        return
    print(f"envelope, {r['payload_mb']} MB payload (RSA-3072, AES-256-GCM), median of {r['repeat']}:")
    print(f"  seal    {r['seal_mb_s']:8.1f} MB/s")
    print(f"  unseal  {r['unseal_mb_s']:8.1f} MB/s")
    print(f"  overhead {r['envelope_overhead_bytes']} bytes per envelope")
    print(f"1 KB message: seal {r['seal_ms_1kb']} ms, unseal {r['unseal_ms_1kb']} ms (RSA-bound)")


if __name__ == "__main__":
    main()
