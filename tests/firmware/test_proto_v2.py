"""The v2 work-mode adapter: bounded ring of unacknowledged readings, acks from the gateway's own codec."""
from __future__ import annotations

import proto_v2  # noqa: E402  (firmware/lib, on sys.path via conftest)
import pytest
from netbase import NetError  # noqa: E402

from services.common import v2 as gateway_v2

MASTER = "000102030405060708090a0b0c0d0e0f"
KID = "a1b2c3d4"
VALUES = {"Temp": 36.6, "TempMcu": 23.7, "PulseSig": 2.123, "Acel_x": -0.5, "Acel_y": 0.0, "Acel_z": 1.0,
          "TempMpu": 23.4}


class Site:
    def __init__(self, root: str, ring: int) -> None:
        self.root = root
        self.values = {"v2_master_key": MASTER, "v2_key_id": KID, "ring_size": ring}

    def get(self, name: str, default=None):
        return self.values.get(name, default)


@pytest.fixture
def keys():
    return gateway_v2.derive_keys(bytes.fromhex(MASTER), bytes.fromhex(KID))


def test_ring_is_bounded_acks_remove_and_resend_keeps_order(tmp_path, keys, capsys):
    link = proto_v2.V2Link(Site(str(tmp_path), ring=3))
    frames = [link.reading(VALUES)[0] for _ in range(5)]
    assert link.pending() == 3 and link.dropped == 2
    assert "event=ring_overflow" in capsys.readouterr().out
    assert link.connected() == frames[2:]  # oldest first, the two oldest gave way
    # acks as the gateway builds them, split anywhere across reads
    acks = gateway_v2.seal_ack(keys, 4) + gateway_v2.seal_ack(keys, 3)
    link.received(acks[:7])
    link.received(acks[7:])
    assert [item[0] for item in link.ring] == [5] and link.acked == 2
    link.received(gateway_v2.seal_ack(keys, 4))  # a repeated ack is harmless
    assert link.pending() == 1


def test_forged_ack_closes_the_link_and_keeps_the_reading(tmp_path, keys):
    link = proto_v2.V2Link(Site(str(tmp_path), ring=8))
    link.reading(VALUES)
    forged = bytearray(gateway_v2.seal_ack(keys, 1))
    forged[-1] ^= 1
    with pytest.raises(NetError):
        link.received(bytes(forged))
    assert link.pending() == 1


def test_frames_are_what_the_gateway_opens(tmp_path, keys):
    link = proto_v2.V2Link(Site(str(tmp_path), ring=8))
    frame = link.reading(VALUES)[0]
    parsed, used = gateway_v2.read(frame)
    assert used == len(frame)
    plain = gateway_v2.open_data(keys, parsed)
    assert gateway_v2.parse_reading(plain)["Acel_x"] == "-0.50"


class Clock:
    """proto_v2's ticks_ms, moved by the test."""

    def __init__(self) -> None:
        self.ms = 1000

    def __call__(self) -> int:
        return self.ms


def test_a_reading_the_gateway_refuses_three_times_is_dropped(tmp_path, keys, monkeypatch, capsys):
    clock = Clock()
    monkeypatch.setattr(proto_v2, "ticks_ms", clock)
    link = proto_v2.V2Link(Site(str(tmp_path), ring=8))
    for _ in range(3):
        link.reading(VALUES)
    for attempt in range(1, 4):
        link.connected()
        clock.ms += 30  # the gateway closes the link at seq 1 within milliseconds
        link.lost()
        assert link.pending() == (3 if attempt < 3 else 2)
    assert [item[0] for item in link.ring] == [2, 3] and link.refused == 1 and link.dropped == 0
    assert "event=reading_refused seq=1 tries=3" in capsys.readouterr().out


def test_outages_and_acks_do_not_count_as_refusals(tmp_path, keys, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(proto_v2, "ticks_ms", clock)
    link = proto_v2.V2Link(Site(str(tmp_path), ring=8))
    link.reading(VALUES)
    link.reading(VALUES)
    for _ in range(5):
        link.connected()
        clock.ms += proto_v2.REFUSAL_MS + 3000  # the gateway's bus or auth wait ran out: an outage
        link.lost()
        link.lost()  # a failed reconnect (no link went up) counts nothing either
    assert link.pending() == 2 and link.refused == 0
    # Two quick losses, then seq 1 is acked: seq 2 starts from zero tries.
    for _ in range(2):
        link.connected()
        clock.ms += 10
        link.lost()
    link.connected()
    link.received(gateway_v2.seal_ack(keys, 1))
    clock.ms += 10
    link.lost()
    assert link.tries == (2, 1) and link.pending() == 1 and link.refused == 0
