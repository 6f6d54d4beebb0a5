"""Which simulated device speaks which protocol (the CLI's --protocol choices)."""
from __future__ import annotations

from services.sim.devices import Credentials, SimDevice, V1Device
from services.sim.v2 import V2Device

DEVICES: dict[str, type[SimDevice]] = {"v1": V1Device, "v2": V2Device}


class UnknownProtocol(ValueError):
    pass


def device_class(protocol: str) -> type[SimDevice]:
    try:
        return DEVICES[protocol]
    except KeyError:
        raise UnknownProtocol(f"unknown protocol {protocol!r}; known: {', '.join(DEVICES)}") from None


def make_device(creds: Credentials, variant: str = "chained") -> SimDevice:
    return device_class(creds.protocol)(creds, variant)
