"""The key generation travels with each reading (issue 14, item 6): after a rotation a v2 device's
seq starts again, and the publisher must not drop the new key's readings as duplicates."""
from __future__ import annotations

import json

from tests.proxy.support import connect
from tests.proxy.support import reading as v1_reading

# The store and the secret maker through test_v2, which names them where they live.
from tests.proxy.test_v2 import SQLiteKeyStore, make_secret, read_acks, register_v2, session
from tests.proxy.test_v2 import reading as v2_reading
from tests.support.proc import wait_until


def rotate(stack, device: str, protocol: str) -> dict[str, str]:
    secret = make_secret(protocol)
    store = SQLiteKeyStore.open(stack.config)
    try:
        store.rotate(device, secret, grace=0.0)
    finally:
        store.close()
    return secret


def test_a_v2_seq_seen_under_the_old_key_is_published_under_the_new_one(proxy, publisher):
    secret = register_v2(proxy, "v2-rotated")
    old = session(secret)
    sock = connect(proxy.config.proxy_port)
    sock.sendall(b"".join(old.seal(v2_reading(n))[1] for n in range(3)))
    read_acks(sock, old, 3)
    sock.close()
    new = session(rotate(proxy, "v2-rotated", "v2"))  # a fresh counter: seq 1, 2, 3 again
    sock = connect(proxy.config.proxy_port)
    sock.sendall(b"".join(new.seal(v2_reading(10 + n))[1] for n in range(3)))
    read_acks(sock, new, 3)
    sock.close()
    bus = wait_until(lambda: len(proxy.ingest("v2-rotated")) == 6 and proxy.ingest("v2-rotated"), 5)
    assert [(m["gen"], m["seq"]) for m in bus] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    public = wait_until(lambda: len(publisher.on("Pico/v2-rotated/json")) == 6
                        and publisher.on("Pico/v2-rotated/json"), 5, what="all six readings published")
    temps = [json.loads(p)["Temp"] for p in public]
    assert temps == [36.0, 36.01, 36.02, 36.1, 36.11, 36.12]


def test_v1_readings_carry_the_generation_too(proxy):
    key, iv = proxy.register("v1-gen")
    sock = connect(proxy.config.proxy_port)
    sock.sendall(v1_reading(key, iv, 1))
    got = wait_until(lambda: proxy.ingest("v1-gen"), 5)
    assert got[0]["gen"] == 1 and got[0]["seq"] is None
    sock.close()
