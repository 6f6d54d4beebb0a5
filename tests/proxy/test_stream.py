"""v1 readings through a real proxy, auth and broker: exact values, any TCP split, no waiting."""
from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path

import pytest
from Crypto.Cipher import AES

from services.common import v1
from services.common.readings import ReadingError, validate
from tests.proxy.support import closed_by_peer, connect, credentials, encode, reading
from tests.support.proc import wait_until

ALL = json.loads((Path(__file__).parents[1] / "vectors" / "v1.json").read_text())["readings"]


def publishable(vec: dict) -> bool:
    """The vectors also hold codec edge cases that are not valid readings; keep the real ones."""
    try:
        validate(v1.parse_plaintext(vec["plaintext"].encode()))
        return True
    except (v1.V1Error, ReadingError):
        return False


VECTORS = [v for v in ALL if publishable(v)]
assert len(VECTORS) >= 12, "the vectors file lost its readings"


@pytest.fixture
def proxy(shared_proxy):
    """One stack for the module; every test uses its own device ids."""
    return shared_proxy


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


def by_credentials() -> dict[tuple[str, str], list[dict]]:
    """The vectors per device, each wire once: a byte-identical second copy is a replay (dropped)."""
    out: dict[tuple[str, str], list[dict]] = {}
    seen: set[str] = set()
    for vec in VECTORS:
        if vec["wire"] not in seen:
            seen.add(vec["wire"])
            out.setdefault((vec["key"], vec["iv"]), []).append(vec)
    return out


def test_every_vector_is_published_with_its_exact_values_in_one_write_and_byte_by_byte(proxy):
    expected: dict[str, list[dict]] = {}
    socks = []
    for n, ((key, iv), vecs) in enumerate(by_credentials().items()):
        device = unique(f"vec-{n}")
        proxy.register(device, key, iv)
        for variant in ("chained", "per_block"):
            stream = b"".join(v["wire"].encode() for v in vecs if v["variant"] == variant)
            if not stream:
                continue
            sock = connect(proxy.config.proxy_port)
            if variant == "chained":
                sock.sendall(stream)
            else:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for i in range(len(stream)):
                    sock.send(stream[i:i + 1])
            socks.append(sock)
        expected[device] = [json.loads(v["plaintext"]) for v in vecs]
    for device, values in expected.items():
        count = len(values)
        got = wait_until(lambda d=device, n=count: len(proxy.ingest(d)) >= n and proxy.ingest(d), 10,
                         what=f"readings of {device}")
        assert sorted(json.dumps(r["values"], sort_keys=True) for r in got) == \
            sorted(json.dumps(v, sort_keys=True) for v in values)
    for sock in socks:
        sock.close()


def test_a_reading_is_published_before_the_next_one_starts(proxy):
    dev = unique("eager")
    key, iv = proxy.register(dev)
    sock = connect(proxy.config.proxy_port)
    sock.sendall(reading(key, iv, 5))  # and then nothing: no delimiter follows a reading
    [msg] = wait_until(lambda: proxy.ingest(dev), 3, what="the reading without a follower")
    assert msg["device"] == dev and msg["protocol"] == "v1" and msg["seq"] is None
    assert msg["values"]["Temp"] == "36.050" and msg["values"]["Acel_y"] == "-0.50"
    assert msg["src"] == list(sock.getsockname())
    assert msg["gw"] == ["127.0.0.1", proxy.config.proxy_port]
    sock.sendall(reading(key, iv, 6))
    msgs = wait_until(lambda: len(proxy.ingest(dev)) == 2 and proxy.ingest(dev), 3)
    assert msgs[0]["uid"] != msgs[1]["uid"]
    sock.close()


def test_connect_once_and_disconnect_only_when_the_last_connection_closes(proxy):
    dev = unique("twice")
    key, iv = proxy.register(dev)
    first, second = connect(proxy.config.proxy_port), connect(proxy.config.proxy_port)
    first.sendall(reading(key, iv, 1))
    second.sendall(reading(key, iv, 2, variant="per_block"))
    wait_until(lambda: len(proxy.ingest(dev)) == 2, 5)
    first.close()
    wait_until(lambda: [ln for ln in proxy.close_lines("eof") if f"device={dev} " in ln], 5,
               what="the first close")
    second.sendall(reading(key, iv, 3, variant="per_block"))
    wait_until(lambda: len(proxy.ingest(dev)) == 3, 5, what="the second connection to go on")
    # Two connections at once: reported once, and over when the device is down to one.
    assert [e["event"] for e in proxy.events(dev)] == [
        "connect", "duplicate_session", "connect", "duplicate_session_end"]
    second.close()
    wait_until(lambda: [e["event"] for e in proxy.events(dev)].count("disconnect") == 1, 5)
    assert [e["event"] for e in proxy.events(dev)][-1] == "disconnect"


def test_an_identified_device_that_goes_quiet_disconnects_without_a_rejection(proxy):
    dev = unique("quiet")
    key, iv = proxy.register(dev)
    sock = connect(proxy.config.proxy_port)
    sock.sendall(reading(key, iv))
    wait_until(lambda: proxy.ingest(dev), 3)
    assert closed_by_peer(sock, timeout=5)  # MEDSEC_IDLE_TIMEOUT=1.5
    sock.close()
    events = wait_until(lambda: len(proxy.events(dev)) == 2 and proxy.events(dev), 3)
    assert [(e["event"], e["reason"]) for e in events] == [("connect", None), ("disconnect", "idle_timeout")]


def test_a_bad_reading_after_good_ones_closes_with_rejected_then_disconnect(proxy):
    dev = unique("lapsed")
    key, iv = proxy.register(dev)
    sock = connect(proxy.config.proxy_port)
    sock.sendall(reading(key, iv, 1) + reading(key, iv, 2))
    wait_until(lambda: len(proxy.ingest(dev)) == 2, 5)
    sock.sendall(v1.encrypt(AES.new(key.encode(), AES.MODE_ECB).encrypt, iv.encode(),
                            b'{"Temp":"36.600", not json at all', "chained") + reading(key, iv, 3))
    assert closed_by_peer(sock)
    sock.close()
    events = wait_until(lambda: len(proxy.events(dev)) == 3 and proxy.events(dev), 5)
    assert [(e["event"], e["reason"]) for e in events] == [
        ("connect", None), ("rejected", "not_json"), ("disconnect", "not_json")]
    assert len(proxy.ingest(dev)) == 2  # neither the bad reading nor the one after it
    [line] = [ln for ln in proxy.close_lines("not_json") if f"device={dev} " in ln]
    assert "readings=2" in line


def test_a_burst_of_readings_is_published_and_counted_once_each(proxy):
    """A device's whole burst (MEDSEC_DEVICE_BURST, 20) in one write: many share a bus message (one
    bookkeeping entry each), more than may wait for their PUBACK at once (8). Each is published
    once and counted once."""
    dev = unique("burst")
    key, iv = proxy.register(dev)
    sock = connect(proxy.config.proxy_port)
    src = f"src=127.0.0.1:{sock.getsockname()[1]} "
    sock.sendall(b"".join(reading(key, iv, n) for n in range(20)))
    wait_until(lambda: len(proxy.ingest(dev)) == 20, 10)
    sock.close()
    [line] = wait_until(lambda: [ln for ln in proxy.close_lines("eof") if src in ln], 5)
    assert "readings=20 " in line
    assert [m["values"]["Temp"] for m in proxy.ingest(dev)] == [f"{36 + n / 100:.3f}" for n in range(20)]


@pytest.mark.parametrize("bad_at", [0, 1, 5])
@pytest.mark.parametrize("bad", ["not_json", "foreign_key"])
def test_readings_pipelined_in_one_write_stop_at_the_first_bad_one(proxy, bad_at, bad):
    """The proxy asks auth about a write's whole readings together: those before a bad reading
    are published, in order; the bad one and every one behind it are not, and the connection
    closes with the bad one's reason, whatever auth said of the readings behind it."""
    dev = unique(f"pipe-{bad}-{bad_at}")
    key, iv = proxy.register(dev)
    broken = (encode(key, iv, b'{"Temp":"36.600", not json at all') if bad == "not_json"
              else reading(credentials()[0], iv, 99))
    wires = [reading(key, iv, n) for n in range(8)]
    wires.insert(bad_at, broken)
    sock = connect(proxy.config.proxy_port)
    src = f"src=127.0.0.1:{sock.getsockname()[1]} "
    sock.sendall(b"".join(wires))
    assert closed_by_peer(sock)
    sock.close()
    # Under another device's key: unknown as a first reading, unreadable under the device's key after.
    reason = bad if bad == "not_json" else "unknown_key" if bad_at == 0 else "not_printable"
    [line] = wait_until(lambda: [ln for ln in proxy.close_lines(reason) if src in ln], 5)
    assert f"readings={bad_at} " in line
    # The proxy logs the close once the broker acknowledged what it published; the monitor's
    # copies may still be on their way.
    wait_until(lambda: len(proxy.ingest(dev)) >= bad_at, 5)
    published = [r["values"]["Temp"] for r in proxy.ingest(dev)]
    assert published == [f"{36 + n / 100:.3f}" for n in range(bad_at)]
    # Identified once, by the first reading: nothing behind a refused one is identified afresh.
    identified = proxy.log("auth").count(f"event=identified device={dev} ")
    assert identified == (0 if (bad, bad_at) == ("foreign_key", 0) else 1)
