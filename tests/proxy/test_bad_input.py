"""Issue 2 "Done when" 4: each bad input closes its connection with one log line and one event
naming the reason, publishes nothing, and leaves another device streaming.

Real processes: the project's Mosquitto, `python -m services.auth`, `python -m services.proxy`.
"""
from __future__ import annotations

import json
import random
import re
import socket
import struct
import threading
import time
import uuid
from pathlib import Path

import pytest

from services.common import v1
from tests.proxy.support import GOOD, Streamer, closed_by_peer, connect, credentials, encode, reading
from tests.support.proc import free_port, wait_until


def text(values: dict) -> bytes:
    return ("{" + ",".join(f'"{k}":"{v}"' for k, v in values.items()) + "}").encode()


def good_strings(**changes: str) -> dict:
    values = {k: f"{v:.3f}" for k, v in GOOD.items()}
    values.update(changes)
    return values


# name -> (what the bad device sends given its registered key and iv, the reason, key registered?)
CASES = {
    "unknown_key": (lambda k, i: reading(*credentials()), "unknown_key", False),
    "garbage": (lambda k, i: b"\x00\x17\xfe garbage \x01\x02" * 4, "unsupported_protocol", False),
    "not_hex": (lambda k, i: b"0123456789abcdefXYZ0123456789abcdef", "not_hex", False),
    "wrong_block_length": (lambda k, i: b"0123456789abcdef0123+" + b"0" * 32, "bad_block_length", False),
    "too_long": (lambda k, i: encode(k, i, b'{"Temp":"' + b"1" * 16 * 70), "too_long", True),
    "valid_block_then_garbage": (lambda k, i: reading(k, i)[:32] + b"+garbage, not hex!", "not_hex", True),
    "not_json": (lambda k, i: encode(k, i, b'{"Temp":"36.600", this is not json'), "not_json", True),
    "missing_field": (lambda k, i: encode(k, i, text({k2: v for k2, v in good_strings().items()
                                                      if k2 != "PulseSig"})), "missing_field", True),
    "not_numeric": (lambda k, i: encode(k, i, text(good_strings(Acel_x="abc"))), "not_numeric", True),
    "out_of_range": (lambda k, i: encode(k, i, text(good_strings(Temp="99.000"))), "out_of_range", True),
}


def assert_only_good_device_affected(proxy, good: Streamer, reason: str, device: str) -> None:
    good_id = good.device
    wait_until(lambda: proxy.rejected(reason, device), 5, what=f"a rejected event {reason}")
    # One event naming the reason, on the device's topic or ~unidentified, none anywhere else.
    named = [e for t in proxy.monitor.topics() if t.startswith("medsec/events/")
             for e in proxy.events(t.split("/", 2)[2]) if e.get("reason") == reason]
    assert len(named) == 1, named
    assert named[0]["event"] == "rejected" and named[0]["device"] == (None if device == "~unidentified"
                                                                       else device)
    assert len(proxy.close_lines(reason)) == 1
    # Nothing published for the bad connection; the good device goes on.
    assert proxy.ingest_devices() == {good_id}
    before = len(proxy.ingest(good_id))
    wait_until(lambda: len(proxy.ingest(good_id)) >= before + 3, 5, what="the good device to keep streaming")
    assert good.error is None
    assert not any(e["event"] == "disconnect" for e in proxy.events(good_id))
    assert "Traceback" not in proxy.log()


@pytest.fixture
def proxy(shared_proxy):
    """One stack for the module (unique device ids per test), fresh monitor and log view per test."""
    return shared_proxy


@pytest.fixture
def good(proxy):
    """A well-behaved device streaming through the whole test."""
    device = f"good-{uuid.uuid4().hex[:8]}"
    key, iv = proxy.register(device)
    streamer = Streamer(proxy.config.proxy_port, key, iv, device=device)
    streamer.start()
    wait_until(lambda: proxy.ingest(device), 5, what="the good device's first reading")
    yield streamer
    streamer.stop()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_closes_only_that_connection(proxy, good, case):
    make, reason, registered = CASES[case]
    device = f"bad-{case.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
    key, iv = proxy.register(device) if registered else credentials()
    sock = connect(proxy.config.proxy_port)
    sock.sendall(make(key, iv))
    assert closed_by_peer(sock)
    sock.close()
    named = device if registered and reason not in ("too_long", "not_hex") else "~unidentified"
    assert_only_good_device_affected(proxy, good, reason, named)


def test_a_connection_that_sends_nothing(proxy, good):
    sock = connect(proxy.config.proxy_port)
    assert closed_by_peer(sock, timeout=5)  # MEDSEC_IDLE_TIMEOUT=1.5 in the test env
    sock.close()
    assert_only_good_device_affected(proxy, good, "idle_timeout", "~unidentified")


def test_a_slow_drip_of_bytes(proxy, good):
    key, iv = proxy.register(f"dripper-{uuid.uuid4().hex[:6]}")
    sock = connect(proxy.config.proxy_port)
    wire = reading(key, iv)
    stop = threading.Event()

    def drip() -> None:  # one byte every 0.3 s: never idle, never finishing (MEDSEC_READING_TIMEOUT=1)
        for byte in wire:
            if stop.wait(0.3):
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                return

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        assert closed_by_peer(sock, timeout=5)
    finally:
        stop.set()
        dripper.join(2)
        sock.close()
    assert_only_good_device_affected(proxy, good, "reading_timeout", "~unidentified")


def test_each_read_has_its_own_deadline_however_long_the_connection_lives(proxy):
    """One timer per connection watches the read in progress and follows its deadline: a device
    whose readings come every 0.6 s (MEDSEC_IDLE_TIMEOUT=1.5) outlives its first reads' deadlines,
    every reading published; one that then falls silent is closed at idle_timeout, not earlier."""
    device = f"steady-{uuid.uuid4().hex[:6]}"
    key, iv = proxy.register(device)
    steady = Streamer(proxy.config.proxy_port, key, iv, interval=0.6, device=device)
    steady.start()
    wait_until(lambda: len(proxy.ingest(device)) >= 7, 10, what="seven readings, 3.6 s of streaming")
    steady.stop()
    assert steady.error is None
    assert not [ln for ln in proxy.close_lines("idle_timeout") if f"device={device} " in ln]
    silent = connect(proxy.config.proxy_port)
    silent.sendall(reading(key, iv, 99))
    sent = time.monotonic()
    assert closed_by_peer(silent, timeout=5)
    assert time.monotonic() - sent >= 1.4  # the idle deadline counts from the last bytes
    silent.close()
    wait_until(lambda: [ln for ln in proxy.close_lines("idle_timeout") if f"device={device} " in ln], 5,
               what="the silent connection's close line")


def test_a_client_that_connects_and_resets(proxy, good):
    key, iv = proxy.register(f"resetter-{uuid.uuid4().hex[:6]}")
    sock = connect(proxy.config.proxy_port)
    sock.sendall(reading(key, iv)[:100])
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST, not FIN
    assert_only_good_device_affected(proxy, good, "reset", "~unidentified")


def test_a_port_check_that_resets_before_its_first_byte_is_not_a_fault(proxy, good):
    """A balancer's health check (HAProxy's end with a reset) is no rejected device: no warning, no event."""
    def resets() -> int:
        text = (proxy.config.run_dir / "metrics-proxy.prom").read_text()
        found = re.search(r'_closed_total\{reason="reset"\} (\d+)', text)
        return int(found.group(1)) if found else 0

    lines, events, before = len(proxy.close_lines("reset")), len(proxy.rejected("reset")), resets()
    for _ in range(3):
        check = connect(proxy.config.proxy_port)
        check.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        check.close()  # RST before a byte
    wait_until(lambda: resets() >= before + 3, 5, what="the proxy to count the three resets")
    assert len(proxy.close_lines("reset")) == lines and len(proxy.rejected("reset")) == events
    assert good.error is None


def test_first_block_alone_decides_nothing(proxy, good):
    """A reading is published only when complete: half a reading then EOF publishes nothing."""
    key, iv = proxy.register(f"halfway-{uuid.uuid4().hex[:6]}")
    sock = connect(proxy.config.proxy_port)
    sock.sendall(reading(key, iv)[:v1.BLOCK_HEX * 3 + 2])
    sock.shutdown(socket.SHUT_WR)
    assert closed_by_peer(sock)
    sock.close()
    assert_only_good_device_affected(proxy, good, "truncated", "~unidentified")


# --- issue 14 item 4: a block no device sends closes the connection when it arrives ------------

# Long limits on this proxy: a close within CLOSE_WITHIN seconds is the block's doing, never a timeout.
PATIENT_ENV = {"MEDSEC_READING_TIMEOUT": "30", "MEDSEC_IDLE_TIMEOUT": "60"}
CLOSE_WITHIN = 5.0


@pytest.fixture(scope="module")
def patient(shared_stack):
    """A second proxy on the module's stack whose reading and idle timeouts are far away."""
    port = free_port()
    shared_stack.start_proxy(name="patient", port=port, **PATIENT_ENV)
    return port


def send_in_pieces(sock: socket.socket, data: bytes, rng: random.Random) -> None:
    """Write `data` in random pieces; the pauses between them (not a synchronisation: nothing
    waits on them) let the proxy read partial blocks, '+' and block ends separately."""
    pos = 0
    while pos < len(data):
        size = rng.randint(1, 80)
        sock.sendall(data[pos:pos + size])
        pos += size
        time.sleep(rng.choice([0, 0, 0.002]))


def blocks_of(wire: bytes) -> list[bytes]:
    return [bytes.fromhex(b.decode()) for b in wire.split(b"+")]


def wire_of(blocks: list[bytes]) -> bytes:
    return b"+".join(b.hex().encode() for b in blocks)


def test_valid_streams_in_random_pieces_are_never_refused(proxy, patient):
    """The independent vectors (both variants) through the real proxy and auth, split at random."""
    vectors = json.loads((Path(__file__).parents[1] / "vectors" / "v1.json").read_text())["readings"]
    vectors = [v for v in vectors if v["plaintext"].count('"') == 28]  # the complete, valid readings
    # Each once: a byte-identical repeat is a replay, which the proxy rightly drops (issue 14).
    vectors = list({(v["key"], v["wire"]): v for v in vectors}.values())
    rng = random.Random(14)
    streams: dict[tuple[str, str, str], list[dict]] = {}
    for vec in vectors:
        streams.setdefault((vec["key"], vec["iv"], vec["variant"]), []).append(vec)
    names = {}
    for key, iv, _ in streams:
        if (key, iv) not in names:
            names[(key, iv)] = f"vec-{uuid.uuid4().hex[:8]}"
            proxy.register(names[(key, iv)], key, iv)
    for (key, iv, _), stream in streams.items():
        device = names[(key, iv)]
        before = len(proxy.ingest(device))
        with connect(patient) as sock:
            send_in_pieces(sock, b"".join(v["wire"].encode() for v in stream), rng)
            want = before + len(stream)
            got = wait_until(lambda d=device, n=want: len(proxy.ingest(d)) == n and proxy.ingest(d), 10,
                             what=f"{device}'s readings")
        assert [r["values"] for r in got[before:]] == [json.loads(v["plaintext"]) for v in stream]
    assert not [e for t in proxy.monitor.topics() if t.startswith("medsec/events/")
                for e in proxy.events(t.split("/", 2)[2]) if e["event"] == "rejected"]


GARBAGE = ["block_1_variant_unknown", "middle", "last", "random_blocks", "after_good_readings",
           "other_device_after_a_good_reading"]


def garbage(name: str, key: str, iv: str, variant: str, rng: random.Random) -> tuple[bytes, int]:
    """What a device sends before going quiet, and how many good readings precede the bad block.
    The bytes end at the bad block (the caller may add a '+'): the rest never comes."""
    good = [reading(key, iv, n, variant) for n in rng.sample(range(100), 2)]
    blocks = blocks_of(good[0])
    if name == "random_blocks":
        return wire_of([blocks[0]] + [rng.randbytes(v1.BLOCK) for _ in range(3)]), 0
    if name == "after_good_readings":
        return good[0] + good[1] + wire_of([rng.randbytes(v1.BLOCK)]), 2
    if name == "other_device_after_a_good_reading":
        return good[0] + reading(*credentials(), 0, variant)[:v1.BLOCK_HEX], 1
    position = {"block_1_variant_unknown": 1, "middle": rng.randint(2, len(blocks) - 2),
                "last": len(blocks) - 1}[name]
    blocks[position] = rng.randbytes(v1.BLOCK)
    return wire_of(blocks[:position + 1]), 0


@pytest.mark.parametrize("variant", v1.VARIANTS)
@pytest.mark.parametrize("plus", [False, True], ids=["at_block_end", "plus_after_it"])
def test_a_bad_block_closes_the_connection_when_it_arrives(proxy, patient, variant, plus):
    rng = random.Random(f"{variant}{plus}")
    for name in GARBAGE:
        device = f"garbled-{name.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
        key, iv = proxy.register(device)
        data, good_before = garbage(name, key, iv, variant, rng)
        with connect(patient) as sock:
            started = time.monotonic()
            send_in_pieces(sock, data + (b"+" if plus else b""), rng)
            assert closed_by_peer(sock, timeout=CLOSE_WITHIN + 1), name
            elapsed = time.monotonic() - started
        assert elapsed < CLOSE_WITHIN, (name, elapsed)  # the reading timeout is 30 s
        rejected = wait_until(lambda d=device: proxy.rejected("not_printable", d), 5, what=f"{name}'s event")
        assert len(rejected) == 1 and rejected[0]["device"] == device
        assert len(proxy.ingest(device)) == good_before, name
        line = [ln for ln in proxy.close_lines("not_printable", "patient") if f"device={device} " in ln]
        assert len(line) == 1, name
    assert "Traceback" not in proxy.log("patient") + proxy.log("auth")


def test_no_key_or_iv_ever_reaches_the_proxy_log_or_events(proxy):
    """Runs last in this module: every key registered above, against everything the proxy wrote."""
    assert len(proxy.secrets) >= 20
    whole_log = "".join(p.read_text() for p in proxy.log_dir.glob("*.log"))  # both proxies, auth
    assert "event=close" in whole_log
    for secret in proxy.secrets:
        assert secret not in whole_log
    seen = proxy.history + proxy.monitor.messages
    assert any(m.topic.startswith("medsec/events/") for m in seen)
    for payload in (m.payload.decode(errors="replace") for m in seen):
        assert not any(secret in payload for secret in proxy.secrets)
