"""The PROXY v2 header parser (pure), on headers built by hand from the specification."""
from __future__ import annotations

import socket
import struct

import pytest

from services.proxy import proxyproto
from services.proxy.proxyproto import ProxyHeaderError


def header(command: int = 0x21, family: int = 0x11, addresses: bytes = b"") -> tuple[bytes, bytes]:
    fixed = proxyproto.SIGNATURE + bytes([command, family]) + struct.pack(">H", len(addresses))
    return fixed, addresses


def tcp4(src: str, sport: int, dst: str = "10.0.0.9", dport: int = 9998) -> bytes:
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">HH", sport, dport)


def test_tcp4_and_tcp6_give_the_clients_address_and_port():
    fixed, addrs = header(addresses=tcp4("192.0.2.7", 50123) + b"\x04\x00\x01\x00")  # a TLV after
    assert proxyproto.address_length(fixed) == len(addrs)
    assert proxyproto.source(fixed, addrs) == ("192.0.2.7", 50123)
    six = (socket.inet_pton(socket.AF_INET6, "2001:db8::7") + socket.inet_pton(socket.AF_INET6, "2001:db8::1")
           + struct.pack(">HH", 40000, 9998))
    fixed, addrs = header(family=0x21, addresses=six)
    assert proxyproto.source(fixed, addrs) == ("2001:db8::7", 40000)


def test_local_and_unspec_keep_the_connections_own_address():
    assert proxyproto.source(*header(command=0x20, family=0x00)) is None  # a health check
    assert proxyproto.source(*header(family=0x00)) is None


@pytest.mark.parametrize("fixed, why", [
    (b"3132333435363738", "does not start with a PROXY protocol v2 header"),
    (b"PROXY TCP4 1.2.3", "does not start with a PROXY protocol v2 header"),  # v1 text: not read
    (proxyproto.SIGNATURE + b"\x11\x11\x00\x0c", "0x11 is not v2 LOCAL or PROXY"),
    (proxyproto.SIGNATURE + b"\x21\x11\xff\xff", "address block of 65535 bytes"),
])
def test_anything_else_is_refused_with_its_reason(fixed, why):
    with pytest.raises(ProxyHeaderError, match=why) as err:
        proxyproto.address_length(fixed)
    assert err.value.reason == "bad_proxy_header"


def test_a_short_address_block_is_refused():
    fixed, _ = header(addresses=b"\x00" * 12)
    with pytest.raises(ProxyHeaderError, match="too short"):
        proxyproto.source(fixed, b"\x00" * 6)
