"""Issue 2 "Done when" 4: each bad input closes its connection with one log line and one event
naming the reason, publishes nothing, and leaves another device streaming.

Real processes: the project's Mosquitto, `python -m services.auth`, `python -m services.proxy`.
"""
from __future__ import annotations

import socket
import struct
import threading
import uuid

import pytest

from services.common import v1
from tests.proxy.support import GOOD, Streamer, closed_by_peer, connect, credentials, encode, reading
from tests.support.proc import wait_until


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
    assert proxy.ingest_topics() == {f"medsec/ingest/{good_id}"}
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


def test_a_client_that_connects_and_resets(proxy, good):
    key, iv = proxy.register(f"resetter-{uuid.uuid4().hex[:6]}")
    sock = connect(proxy.config.proxy_port)
    sock.sendall(reading(key, iv)[:100])
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST, not FIN
    assert_only_good_device_affected(proxy, good, "reset", "~unidentified")


def test_first_block_alone_decides_nothing(proxy, good):
    """A reading is published only when complete: half a reading then EOF publishes nothing."""
    key, iv = proxy.register(f"halfway-{uuid.uuid4().hex[:6]}")
    sock = connect(proxy.config.proxy_port)
    sock.sendall(reading(key, iv)[:v1.BLOCK_HEX * 3 + 2])
    sock.shutdown(socket.SHUT_WR)
    assert closed_by_peer(sock)
    sock.close()
    assert_only_good_device_affected(proxy, good, "truncated", "~unidentified")


def test_no_key_or_iv_ever_reaches_the_proxy_log_or_events(proxy):
    """Runs last in this module: every key registered above, against everything the proxy wrote."""
    assert len(proxy.secrets) >= 20
    whole_log = (proxy.log_dir / "proxy.log").read_text()
    assert "event=close" in whole_log
    for secret in proxy.secrets:
        assert secret not in whole_log
    seen = proxy.history + proxy.monitor.messages
    assert any(m.topic.startswith("medsec/events/") for m in seen)
    for payload in (m.payload.decode(errors="replace") for m in seen):
        assert not any(secret in payload for secret in proxy.secrets)
