"""v1 identification cost: every registered credential tried on a first block (issue 14).

    python -m benchmarks.bench_identify [--keys 10000] [--repeat 25]

Identification never stops at the first hit (services/auth/identify.py): every credential,
revoked and rotated-out ones included, is tried on block 0, so the cost no longer depends on
where the device's key sits in the list. `run()` returns median milliseconds as a dict.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

from Crypto.Cipher import AES

from services.auth.identify import V1Keys
from services.common import v1
from services.keystore.credentials import make_secret
from services.keystore.models import Credential


def _block0(secret: dict[str, str]) -> bytes:
    ecb = AES.new(secret["key"].encode(), AES.MODE_ECB)
    wire = v1.encrypt(ecb.encrypt, secret["iv"].encode(), b'{"Temp":"36.600"}', "chained")
    return bytes.fromhex(wire.split(b"+")[0].decode())


def _median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 3)


def run(keys: int = 10000, repeat: int = 25, batch: int = 256) -> dict:
    rng = random.Random(1)
    revoked = keys // 10
    creds = [Credential(f"d{n}", "v1", 1, make_secret("v1"), None, n < revoked) for n in range(keys)]
    table = V1Keys()
    table.load(creds, True, time.time())
    known = [_block0(c.secret) for c in rng.sample(creds[revoked:], batch)]
    return {
        "keys": keys,
        "revoked": revoked,
        "first_block_known_ms": _median_ms(lambda: table.identify(known[0]), repeat),
        "first_block_unknown_ms": _median_ms(lambda: table.identify(os.urandom(v1.BLOCK)), repeat),
        f"batch_{batch}_ms": _median_ms(lambda: table.identify_batch(known), max(3, repeat // 4)),
        "load_average": round(os.getloadavg()[0], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=25)
    args = parser.parse_args()
    print(json.dumps(run(args.keys, args.repeat), indent=2))


if __name__ == "__main__":
    main()
