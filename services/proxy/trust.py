"""Who may send a PROXY protocol header: MEDSEC_PROXY_TRUSTED (pure).

A PROXY header names the device's address, and that address is what throttling, events and
Pico/<id>/Ip_address believe; so only the balancer may send one. The setting is a
comma-separated list of addresses or networks, IPv4 or IPv6 (`10.0.0.5, 10.1.0.0/16, fd00::/8`).
Unset, only loopback is trusted (a balancer on the same host): a safe default that refuses
everyone else with `untrusted_proxy` rather than believing any peer.
"""
from __future__ import annotations

import ipaddress

from services.common.config import parse_networks

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def parse_trusted(text: str) -> tuple[Network, ...]:
    """The networks of MEDSEC_PROXY_TRUSTED; unset is loopback. ValueError names a bad entry."""
    return parse_networks("MEDSEC_PROXY_TRUSTED", text) or LOOPBACK


def trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return any(ip.version == n.version and ip in n for n in networks)
