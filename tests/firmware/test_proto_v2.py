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


def test_a_verified_refusal_drops_exactly_that_reading(tmp_path, keys, capsys):
    link = proto_v2.V2Link(Site(str(tmp_path), ring=8))
    frames = [link.reading(VALUES)[0] for _ in range(3)]
    link.connected()
    link.received(gateway_v2.seal_refusal(keys, 2, "out_of_range"))
    assert [item[0] for item in link.ring] == [1, 3] and link.refused == 1 and link.dropped == 0
    assert "event=reading_refused reason=out_of_range seq=2" in capsys.readouterr().out
    assert link.connected() == [frames[0], frames[2]]  # the readings around it are still sent
    # the same refusal again (the gateway answered a resent copy) drops nothing more
    link.received(gateway_v2.seal_refusal(keys, 2, "out_of_range"))
    assert link.pending() == 2 and link.refused == 1
    assert "event=refusal_ignored" in capsys.readouterr().out


@pytest.mark.parametrize("seq, reason, pending, refused", [
    pytest.param(1, "a_reason_of_a_newer_gateway", 0, 1, id="an unknown reason code is still a refusal"),
    pytest.param(99, "out_of_range", 1, 0, id="a refusal for a seq never sent drops nothing"),
])
def test_a_verified_refusal_drops_only_the_reading_it_names(tmp_path, keys, seq, reason, pending, refused):
    link = proto_v2.V2Link(Site(str(tmp_path), ring=8))
    link.reading(VALUES)
    link.received(gateway_v2.seal_refusal(keys, seq, reason))
    assert link.pending() == pending and link.refused == refused


def forgeries(keys, other):
    """Refusals of seq 1 that the gateway did not make: each must leave the reading in place."""
    good = gateway_v2.seal_refusal(keys, 1, "out_of_range")
    ack = gateway_v2.seal_ack(keys, 1)
    cases = {
        "bad tag": bytes(good[:-1]) + bytes([good[-1] ^ 1]),
        "reason byte changed": good[:-9] + bytes([good[-9] ^ 1]) + good[-8:],
        "other device's key": gateway_v2.seal_refusal(other, 1, "out_of_range"),
        "ack retyped as refusal": bytes([0xC4]) + ack[1:-10] + (9).to_bytes(2, "big") + ack[-8:] + b"\x00",
        "refusal retyped as ack": bytes([0xC3]) + good[1:],
        "refusal of seq 2 relabelled 1": gateway_v2.seal_refusal(keys, 2, "out_of_range")[:4 + 4]
        + (1).to_bytes(5, "big") + gateway_v2.seal_refusal(keys, 2, "out_of_range")[4 + 4 + 5:],
        "reading reflected back": None,
        "tag under the ack nonce": gateway_v2.build_header("refusal", keys.kid, 1, 9)
        + keys.cipher("g2d").encrypt(gateway_v2.nonce(keys.common_iv, keys.kid, 1),
                                     gateway_v2.build_header("refusal", keys.kid, 1, 9), bytes([6])),
        "truncated then another frame": good[:10] + good,
    }
    return cases


@pytest.mark.parametrize("case", [
    "bad tag", "reason byte changed", "other device's key", "ack retyped as refusal",
    "refusal retyped as ack", "refusal of seq 2 relabelled 1", "reading reflected back",
    "tag under the ack nonce", "truncated then another frame",
])
def test_a_forged_refusal_drops_nothing(tmp_path, keys, case):
    other = gateway_v2.derive_keys(bytes(16), keys.kid)
    link = proto_v2.V2Link(Site(str(tmp_path), ring=8))
    frame = link.reading(VALUES)[0]
    link.reading(VALUES)
    link.connected()
    forged = forgeries(keys, other)[case] or frame
    with pytest.raises(NetError):
        link.received(forged)
    assert link.pending() == 2 and link.refused == 0 and link.acked == 0
    assert link.lost() is False  # no verified answer on that link: the app backs off


def test_links_that_end_without_an_answer_never_drop_a_reading(tmp_path, keys):
    link = proto_v2.V2Link(Site(str(tmp_path), ring=8))
    link.reading(VALUES)
    link.reading(VALUES)
    for _ in range(50):  # accepted and closed at once, again and again
        link.connected()
        assert link.lost() is False
    assert link.pending() == 2 and link.refused == 0
    link.connected()
    link.received(gateway_v2.seal_ack(keys, 1))
    assert link.lost() is True and link.pending() == 1
