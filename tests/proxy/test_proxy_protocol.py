"""Behind a real HAProxy sending PROXY v2 (MEDSEC_PROXY_PROTOCOL=1): the proxy sees, logs and throttles
each device's own address, not the balancer's; a connection without the header is refused."""
from __future__ import annotations

import ipaddress
import struct
import sys

import pytest

from services.proxy import proxyproto
from tests.proxy.support import closed_by_peer, connect, credentials, reading
from tests.support.haproxy import HAProxy, haproxy_binary
from tests.support.proc import wait_until

GUESSER, BYSTANDER = "127.0.0.2", "127.0.0.3"  # two loopback addresses: two devices' sources

needs_haproxy = pytest.mark.skipif(haproxy_binary() is None, reason="haproxy not installed")


@needs_haproxy
def test_throttling_behind_the_balancer_blocks_the_guesser_not_every_device(stack, tmp_path):
    stack.start_proxy(MEDSEC_PROXY_PROTOCOL="1", MEDSEC_THROTTLE_FAILURES="3", MEDSEC_THROTTLE_GRACE="0")
    lb = HAProxy(stack.procs, tmp_path, [stack.config.proxy_port])
    key, iv = stack.register("behind-lb")
    for _ in range(5):
        sock = connect(lb.port, source=GUESSER)
        try:
            sock.sendall(reading(*credentials()))
        except OSError:
            pass  # refused at accept: the write may meet a closed socket
        assert closed_by_peer(sock)
        sock.close()
    throttled = wait_until(lambda: [e for e in stack.events() if e["event"] == "throttled"], 5)
    assert [e["src"][0] for e in throttled] == [GUESSER]
    assert len(stack.rejected("unknown_key")) == 3, "tries 4 and 5 were refused at accept"
    # Another device through the same balancer is served, under its own address and port.
    device = connect(lb.port, source=BYSTANDER)
    device.sendall(reading(key, iv, 1))
    got = wait_until(lambda: stack.ingest("behind-lb"), 5, what="the bystander's reading")
    assert got[0]["src"] == [BYSTANDER, device.getsockname()[1]]
    device.close()
    wait_until(lambda: f"src={BYSTANDER}:" in stack.log(), 5, what="its close line, under its own address")


def test_a_connection_without_the_header_is_refused_and_serves_nothing(stack):
    stack.start_proxy(MEDSEC_PROXY_PROTOCOL="1")
    key, iv = stack.register("no-header")
    sock = connect(stack.config.proxy_port)
    sock.sendall(reading(key, iv))
    assert closed_by_peer(sock)
    sock.close()
    wait_until(lambda: "reason=bad_proxy_header" in stack.log(), 5, what="the refusal's log line")
    assert "does not start with a PROXY protocol v2 header" in stack.log()
    assert stack.ingest("no-header") == []
    # A balancer's bare TCP health check (connect, close) is not an error; a second headerless
    # device after it is, and the count shows only that one.
    connect(stack.config.proxy_port).close()
    late = connect(stack.config.proxy_port)
    late.sendall(reading(key, iv))
    assert closed_by_peer(late)
    late.close()
    wait_until(lambda: stack.log().count("reason=bad_proxy_header") >= 2, 5, what="the second refusal")
    assert stack.log().count("reason=bad_proxy_header") == 2


@needs_haproxy
def test_a_header_the_proxy_does_not_expect_names_the_setting(stack, tmp_path):
    stack.start_proxy()
    lb = HAProxy(stack.procs, tmp_path, [stack.config.proxy_port])
    key, iv = stack.register("lb-without-setting")
    sock = connect(lb.port)
    sock.sendall(reading(key, iv))
    assert closed_by_peer(sock)
    sock.close()
    refused = wait_until(lambda: stack.rejected("unsupported_protocol"), 5)
    assert "set MEDSEC_PROXY_PROTOCOL=1" in refused[0]["detail"]


def forged_header(src: str, sport: int) -> bytes:
    """A PROXY v2 header as HAProxy writes it, claiming the connection comes from src:sport."""
    addresses = (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address("127.0.0.1").packed
                 + struct.pack(">HH", sport, 9998))
    return proxyproto.SIGNATURE + bytes([0x21, 0x11]) + struct.pack(">H", len(addresses)) + addresses


@needs_haproxy
@pytest.mark.parametrize("claimed", ["10.9.8.7", "127.0.0.1", BYSTANDER])
def test_a_forged_header_from_an_untrusted_peer_is_refused_and_the_balancer_is_served(stack, tmp_path,
                                                                                      claimed):
    """Issue 14 item 5: MEDSEC_PROXY_TRUSTED names the balancer; anyone else's header is refused."""
    stack.start_proxy(MEDSEC_PROXY_PROTOCOL="1", MEDSEC_PROXY_TRUSTED="127.0.0.1, ::1")
    lb = HAProxy(stack.procs, tmp_path, [stack.config.proxy_port])  # connects from 127.0.0.1
    key, iv = stack.register("trusting")
    # A peer that is not the balancer writes a well-formed header naming another address.
    forger = connect(stack.config.proxy_port, source=GUESSER)
    try:
        forger.sendall(forged_header(claimed, 4242) + reading(key, iv, 1))
    except OSError:
        pass  # refused at accept: the write may meet a closed socket
    assert closed_by_peer(forger)
    forger.close()
    refused = wait_until(lambda: stack.rejected("untrusted_proxy"), 5, what="the refusal's event")
    assert refused[0]["src"][0] == GUESSER and "MEDSEC_PROXY_TRUSTED" in refused[0]["detail"]
    assert "reason=untrusted_proxy" in stack.log() and f"src={GUESSER}:" in stack.log()
    # The balancer's own header is believed: the device's address is the one it names.
    device = connect(lb.port, source=BYSTANDER)
    device.sendall(reading(key, iv, 2))
    got = wait_until(lambda: stack.ingest("trusting"), 5, what="the reading through the balancer")
    assert [m["src"] for m in got] == [[BYSTANDER, device.getsockname()[1]]]
    device.close()
    metrics = (stack.config.run_dir / "metrics-proxy.prom").read_text
    wait_until(lambda: 'refused_total{reason="untrusted_proxy"} 1' in metrics(), 5, what="the counter")


@pytest.mark.parametrize("bad", ["10.0.0.300", "balancer.local", "10.0.0.0/40", ","])
def test_a_bad_trusted_list_stops_the_proxy_with_a_clear_message(stack, bad):
    proc = stack.procs.start("proxy-bad", [sys.executable, "-m", "services.proxy"],
                             env={**stack.env, "MEDSEC_PROXY_PROTOCOL": "1", "MEDSEC_PROXY_TRUSTED": bad})
    assert proc.wait(20) == 2
    log = (stack.log_dir / "proxy-bad.log").read_text()
    assert "MEDSEC_PROXY_TRUSTED" in log and "Traceback" not in log
