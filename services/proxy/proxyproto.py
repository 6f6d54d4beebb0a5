"""PROXY protocol v2 (HAProxy's binary header): the device's own address behind a load balancer.

Behind a balancer every connection comes from the balancer's address, so per-address
throttling would punish every device for one device's guesses. With
MEDSEC_PROXY_PROTOCOL=1 each connection must begin with the header the balancer
writes (`send-proxy-v2`), and the address in it is the connection's source.
Only v2 is read: fixed-size, binary, no text to parse. Pure functions.
Spec: https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt (section 2.2).
"""
from __future__ import annotations

import ipaddress
import struct

from services.common.errors import ReasonError

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
FIXED_LENGTH = 16  # signature, version/command, family/transport, address length
MAX_ADDRESS_LENGTH = 512  # addresses and TLVs; HAProxy sends far less
_LOCAL, _PROXY = 0x20, 0x21  # version 2 with command LOCAL (health checks) or PROXY
_TCP4, _TCP6 = 0x11, 0x21


class ProxyHeaderError(ReasonError, ValueError):
    """Not a PROXY v2 header a balancer would send."""

    def __init__(self, detail: str) -> None:
        super().__init__("bad_proxy_header", detail)


def address_length(fixed: bytes) -> int:
    """From the first 16 bytes: how many bytes of addresses (and TLVs) follow."""
    if len(fixed) != FIXED_LENGTH or not fixed.startswith(SIGNATURE):
        raise ProxyHeaderError("the connection does not start with a PROXY protocol v2 header")
    if fixed[12] not in (_LOCAL, _PROXY):
        raise ProxyHeaderError(f"version/command byte 0x{fixed[12]:02x} is not v2 LOCAL or PROXY")
    (length,) = struct.unpack_from(">H", fixed, 14)
    if length > MAX_ADDRESS_LENGTH:
        raise ProxyHeaderError(f"address block of {length} bytes (at most {MAX_ADDRESS_LENGTH})")
    return length


def source(fixed: bytes, addresses: bytes) -> tuple[str, int] | None:
    """The client's (address, port); None where the spec says to keep the connection's own address:
    a LOCAL connection (the balancer's health check) or a family without one (UNSPEC, UNIX)."""
    if fixed[12] == _LOCAL:
        return None
    family = fixed[13]
    if family == _TCP4 and len(addresses) >= 12:
        return str(ipaddress.IPv4Address(addresses[:4])), struct.unpack_from(">H", addresses, 8)[0]
    if family == _TCP6 and len(addresses) >= 36:
        return str(ipaddress.IPv6Address(addresses[:16])), struct.unpack_from(">H", addresses, 32)[0]
    if family in (_TCP4, _TCP6):
        raise ProxyHeaderError(f"address block of {len(addresses)} bytes is too short for its family")
    return None
