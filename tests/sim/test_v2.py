"""The simulated v2 device (services/sim/v2.py): verified acks and refusals, resends as sent, growing
counters; its connections against a gateway that accepts and closes (backs off, drops nothing)."""
from __future__ import annotations

import secrets

import pytest

from services.common import v1, v2
from services.sim.devices import Credentials
from services.sim.protocols import make_device
from services.sim.runner import SimStats
from services.sim.status import status_line
from services.sim.v2 import MAX_UNACKED, V2Device, seq_counter

GOOD = {"Temp": 36.6, "TempMcu": 23.7, "PulseSig": 2.123, "Acel_x": 0.0, "Acel_y": -0.5,
        "Acel_z": 1.0, "TempMpu": 23.4}


def creds(device: str = "sim-v2") -> Credentials:
    return Credentials(device, "v2", {"master_key": secrets.token_hex(16), "key_id": secrets.token_hex(4)})


def keys(dev: V2Device) -> v2.Keys:
    """The gateway's view of the device's keys (what auth derives from the same credentials)."""
    secret = dev.creds.secrets
    return v2.derive_keys(bytes.fromhex(secret["master_key"]), bytes.fromhex(secret["key_id"]))


def test_frames_open_at_the_gateway_and_acks_clear_pending(tmp_path):
    dev = V2Device(creds(), counter=seq_counter(tmp_path / "c.seq"))
    frames = [dev.encode(GOOD) for _ in range(3)]
    opened = []
    for raw in frames:
        frame, used = v2.read(raw)
        assert used == len(raw)
        opened.append(frame.seq)
        assert v1.parse_plaintext(v2.open_data(keys(dev), frame))["Temp"] == "36.600"
    assert opened == sorted(opened) and len(set(opened)) == 3
    acks = v2.seal_ack(keys(dev), opened[0]) + v2.seal_ack(keys(dev), opened[2])
    assert dev.on_data(acks[:5]) == 0 and dev.on_data(acks[5:]) == 2
    assert dev.unacked() == [frames[1]] and dev.acked_seqs == [opened[0], opened[2]]
    assert dev.on_data(v2.seal_ack(keys(dev), opened[0])) == 0  # a re-sent ack counts once


def test_forged_or_foreign_acks_are_refused(tmp_path):
    dev = V2Device(creds(), counter=seq_counter(None))
    seq = v2.read(dev.encode(GOOD))[0].seq
    other = V2Device(creds("other"), counter=seq_counter(None))
    with pytest.raises(ValueError):
        dev.on_data(v2.seal_ack(keys(other), seq))
    forged = bytearray(v2.seal_ack(keys(dev), seq))
    forged[-1] ^= 1
    with pytest.raises(ValueError):
        V2Device(dev.creds, counter=seq_counter(None)).on_data(bytes(forged))


def test_pending_is_bounded_and_counted(tmp_path):
    dev = V2Device(creds(), counter=seq_counter(None))
    frames = [dev.encode(GOOD) for _ in range(MAX_UNACKED + 5)]
    assert dev.dropped == 5 and dev.unacked() == frames[5:]


def test_counter_only_grows_across_restarts(tmp_path):
    path = tmp_path / "dev.seq"
    used = []
    for _ in range(3):
        counter = seq_counter(path, step=10)
        used += [counter.take() for _ in range(25)]
    assert used == sorted(used) and len(set(used)) == len(used)
    assert used[-1] < 2 ** 40


def test_make_device_and_status_line_show_resent():
    assert isinstance(make_device(creds()), V2Device)
    line = status_line(SimStats(devices=2, sent=10, acked=7, resent=3, acknowledging=True), 1.0)
    assert "acked 7" in line and "resent 3" in line


def test_a_verified_refusal_drops_exactly_its_reading_and_forgeries_drop_nothing():
    dev = V2Device(creds(), counter=seq_counter(None))
    frames = [dev.encode(GOOD) for _ in range(3)]
    gateway = keys(dev)
    good = v2.seal_refusal(gateway, 2, "out_of_range")
    forged = [
        good[:-1] + bytes([good[-1] ^ 1]),  # tag
        good[:-9] + bytes([good[-9] ^ 4]) + good[-8:],  # reason byte
        v2.seal_refusal(keys(V2Device(creds("other"), counter=seq_counter(None))), 2, "out_of_range"),
        bytes([v2.ACK]) + good[1:],  # a refusal passed off as an ack
        bytes([v2.REFUSAL]) + v2.seal_ack(gateway, 2)[1:-10] + (9).to_bytes(2, "big")
        + v2.seal_ack(gateway, 2)[-8:] + b"\x06",  # an ack's tag passed off as a refusal
        frames[1],  # the reading reflected back
    ]
    for bad in forged:
        dev.unacked()
        with pytest.raises(ValueError):
            dev.on_data(bad)
        assert len(dev.pending) == 3 and dev.refused == [] and not dev.answered
    dev.unacked()
    assert dev.on_data(v2.seal_refusal(gateway, 77, "out_of_range")) == 0  # a seq never sent: nothing
    assert len(dev.pending) == 3
    assert dev.on_data(good) == 0 and dev.answered
    assert dev.refused == [(2, "out_of_range")] and dev.unacked() == [frames[0], frames[2]]
    assert dev.on_data(good) == 0 and len(dev.pending) == 2  # the same refusal again changes nothing
