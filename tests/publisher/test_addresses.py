"""The address topics: retained, published with a device's first reading and when they change only."""
from __future__ import annotations

import json
import logging

import pytest

from services.publisher.addresses import LastAddresses
from services.publisher.service import PublisherService

VALUES = {"Temp": "36.600", "TempMcu": "23.700", "PulseSig": "2.123", "Acel_x": "-0.01",
          "Acel_y": "0.000", "Acel_z": "1.002", "TempMpu": "23.400"}
ADDRESS_TOPICS = ("Ip_address", "Port_address", "Internal_Server/Ip_address", "Internal_Server/Port_address")


def ingest(service: PublisherService, device: str, n: int, src: tuple[str, int],
           gw: tuple[str, int] = ("127.0.0.1", 9998), **over: object) -> list:
    body = {"device": device, "ts": 1.0 + n, "seq": None, "protocol": "v1", "values": VALUES,
            "src": list(src), "gw": list(gw), "uid": f"{device}:{n}", **over}
    return service.handle(f"medsec/ingest/{device}", json.dumps(body).encode())


def addresses(out: list) -> dict[str, tuple[bytes, bool]]:
    return {t.split("/", 2)[2]: (p, r) for t, p, r in out if t.endswith("_address")}


@pytest.mark.parametrize("change", [
    {"src": ("10.0.0.8", 5000)},  # the device reconnected from another address
    {"src": ("10.0.0.7", 5001)},  # ... from another port
    {"gw": ("127.0.0.2", 9998)},  # ... through another gateway
    {"gw": ("127.0.0.1", 9999)},
])
def test_addresses_go_out_retained_first_and_on_change_only(change: dict) -> None:
    service = PublisherService(logging.getLogger("test"))
    first = ingest(service, "d1", 0, ("10.0.0.7", 5000))
    assert addresses(first) == {"Ip_address": (b"10.0.0.7", True), "Port_address": (b"5000", True),
                                "Internal_Server/Ip_address": (b"127.0.0.1", True),
                                "Internal_Server/Port_address": (b"9998", True)}
    assert len(first) == 12 and first[-1][0] == "Pico/d1/json"
    for n in range(1, 4):  # the same connection: values and json only
        out = ingest(service, "d1", n, ("10.0.0.7", 5000))
        assert len(out) == 8 and not addresses(out) and out[-1][0] == "Pico/d1/json"
    kwargs = {"src": ("10.0.0.7", 5000), **change}
    moved = ingest(service, "d1", 4, **kwargs)
    assert len(moved) == 12
    src, gw = kwargs["src"], kwargs.get("gw", ("127.0.0.1", 9998))
    assert addresses(moved) == {"Ip_address": (src[0].encode(), True),
                                "Port_address": (str(src[1]).encode(), True),
                                "Internal_Server/Ip_address": (gw[0].encode(), True),
                                "Internal_Server/Port_address": (str(gw[1]).encode(), True)}
    assert len(ingest(service, "d1", 5, **kwargs)) == 8


def test_each_device_has_its_own_addresses_and_duplicates_publish_nothing() -> None:
    service = PublisherService(logging.getLogger("test"))
    assert len(ingest(service, "d1", 0, ("10.0.0.7", 5000))) == 12
    assert len(ingest(service, "d2", 0, ("10.0.0.7", 5000))) == 12  # same address, other device
    assert ingest(service, "d1", 0, ("10.0.0.9", 1)) == []  # a duplicate (same uid): nothing, no change
    assert len(ingest(service, "d1", 1, ("10.0.0.7", 5000))) == 8


def test_a_rejected_reading_does_not_count_as_published() -> None:
    service = PublisherService(logging.getLogger("test"))
    bad = ingest(service, "d1", 0, ("10.0.0.7", 5000), values={**VALUES, "Temp": "hot"})
    assert [t for t, _, _ in bad] == ["medsec/events/d1"]
    assert len(ingest(service, "d1", 1, ("10.0.0.7", 5000))) == 12


def test_the_memory_is_bounded_and_a_forgotten_device_is_published_again() -> None:
    last = LastAddresses(max_devices=2)
    a = (("10.0.0.1", 1), ("127.0.0.1", 9998))
    assert last.changed("d1", a) and last.changed("d2", a) and not last.changed("d1", a)
    assert last.changed("d3", a) and len(last) == 2  # d1 was the first in: forgotten
    assert last.changed("d1", a)
    with pytest.raises(ValueError):
        LastAddresses(max_devices=0)
