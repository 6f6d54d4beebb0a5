"""Protocol v2 end to end through the real proxy, auth and broker (issue 4, "Done when" 1-3).

Devices are the firmware's own module (services/common/v2device.py, copied to the Pico) over real TCP.
"""
from __future__ import annotations

import base64
import socket

import pytest
from Crypto.Cipher import AES

from services.common import v1, v2, v2device
from services.keystore.credentials import make_secret
from services.keystore.models import NewDevice
from services.keystore.sqlite import SQLiteKeyStore
from services.proxy.errors import Reject
from services.proxy.v2 import _answer_bytes
from tests.proxy.support import GOOD, closed_by_peer, connect
from tests.support.proc import wait_until

ACK_SIZE = v2.header_size(4) + v2.TAG


def register_v2(stack, device: str) -> dict[str, str]:
    secret = make_secret("v2")
    store = SQLiteKeyStore.open(stack.config)
    try:
        store.add(NewDevice(device, "v2", secret))
    finally:
        store.close()
    return secret


def session(secret: dict[str, str], start: int = 1) -> v2device.Session:
    return v2device.Session(bytes.fromhex(secret["master_key"]), bytes.fromhex(secret["key_id"]),
                           v2device.MemoryCounter(start))


def reading(n: int) -> bytes:
    return v1.format_reading(dict(GOOD, Temp=36.0 + n / 100))


def read_answers(sock: socket.socket, dev: v2device.Session, count: int,
                 timeout: float = 5.0) -> list[tuple[int, int, int, bytes]]:
    """(kind, seq, reason code, frame) of the next `count` answers, each verified as the device does."""
    sock.settimeout(timeout)
    buf, out = bytearray(), []
    while len(out) < count:
        data = sock.recv(4096)
        if not data:
            raise AssertionError(f"connection closed after {len(out)} answers")
        buf += data
        while True:
            kind, seq, code, used = dev.read_answer(buf)
            if kind is None:
                break
            out.append((kind, seq, code, bytes(buf[:used])))
            del buf[:used]
    return out


def read_acks(sock: socket.socket, dev: v2device.Session, count: int,
              timeout: float = 5.0) -> list[tuple[int, bytes]]:
    answers = read_answers(sock, dev, count, timeout)
    assert all(kind == v2.ACK for kind, _, _, _ in answers), answers
    return [(seq, raw) for _, seq, _, raw in answers]


def seqs(stack, device: str) -> list[int]:
    return [m["seq"] for m in stack.ingest(device)]


def test_readings_are_published_then_acked_and_replays_are_reacked_not_republished(proxy):
    secret = register_v2(proxy, "v2-happy")
    dev = session(secret)
    frames = [dev.seal(reading(n))[1] for n in range(3)]
    sock = connect(proxy.config.proxy_port)
    sock.sendall(b"".join(frames))
    acks = read_acks(sock, dev, 3)
    assert sorted(s for s, _ in acks) == [1, 2, 3]
    wait_until(lambda: len(seqs(proxy, "v2-happy")) == 3, 5, what="three readings on the bus")
    msg = proxy.ingest("v2-happy")[0]
    assert msg["protocol"] == "v2" and msg["values"]["Temp"] == "36.000"
    # the same frame again, on the same connection and on a new one: the same ack, nothing published
    sock.sendall(frames[1])
    (seq, again), = read_acks(sock, dev, 1)
    assert seq == 2 and again == dict(acks)[2]
    other = connect(proxy.config.proxy_port)
    other.sendall(frames[0])
    assert read_acks(other, dev, 1)[0][0] == 1
    wait_until(lambda: len(proxy.rejected("replay", "v2-happy")) == 2, 5, what="two replay events")
    assert seqs(proxy, "v2-happy") == [1, 2, 3]
    # the connection stays usable after a replay
    sock.sendall(dev.seal(reading(4))[1])
    assert read_acks(sock, dev, 1)[0][0] == 4
    sock.close()
    other.close()


def test_every_reading_of_a_long_write_is_acked_and_reported_acknowledged_to_auth(proxy):
    """A replay window's worth of frames in one write go out in several bus messages (at most
    MAX_PENDING_ACKS readings of a connection wait for a PUBACK). The acks of each bus message are
    written and reported to auth together (v2acked): the device gets them all in order, and auth
    marked every seq, so sending them all again on a new connection publishes nothing and each is
    acked again."""
    from services.proxy.connection import MAX_PENDING_ACKS

    count = v2.ReplayWindow.WINDOW  # all of them still inside the window when they come again
    assert count >= 2 * MAX_PENDING_ACKS
    secret = register_v2(proxy, "v2-long")
    dev = session(secret)
    frames = [dev.seal(reading(n))[1] for n in range(count)]
    sock = connect(proxy.config.proxy_port)
    every = list(range(1, count + 1))
    sock.sendall(b"".join(frames))
    assert [seq for seq, _ in read_acks(sock, dev, count)] == every
    sock.close()
    wait_until(lambda: seqs(proxy, "v2-long") == every, 5, what="every reading on the bus")
    again = connect(proxy.config.proxy_port)
    again.sendall(b"".join(frames))
    assert [seq for seq, _ in read_acks(again, dev, count)] == every
    again.close()
    wait_until(lambda: len(proxy.rejected("replay", "v2-long")) == count, 5, what="a replay event each")
    assert seqs(proxy, "v2-long") == every


def test_readings_that_arrive_after_later_ones_are_published_and_acked_once(proxy):
    """A device's readings in any order inside the replay window: each published once, each acked
    (a reading refused on the way while later ones got through is resent, and must not loop)."""
    secret = register_v2(proxy, "v2-late")
    dev = session(secret)
    frames = {seq: frame for seq, frame in (dev.seal(reading(n)) for n in range(v2.ReplayWindow.WINDOW))}
    order = sorted(frames, key=lambda seq: (seq % 3, -seq))  # the newest first, then ever older ones
    sock = connect(proxy.config.proxy_port)
    for chunk in range(0, len(order), 16):  # over four connections, as a device reconnecting
        sock.sendall(b"".join(frames[seq] for seq in order[chunk:chunk + 16]))
        assert sorted(seq for seq, _ in read_acks(sock, dev, 16)) == sorted(order[chunk:chunk + 16])
        sock.close()
        sock = connect(proxy.config.proxy_port)
    sock.sendall(frames[order[-1]])  # acked already: acked again, not published
    assert read_acks(sock, dev, 1)[0][0] == order[-1]
    sock.close()
    wait_until(lambda: sorted(seqs(proxy, "v2-late")) == sorted(frames), 5, what="every reading on the bus")
    assert len(seqs(proxy, "v2-late")) == len(frames)


def test_the_frames_of_one_write_before_a_bad_one_are_served_and_none_after_it(proxy):
    """Frames are asked of auth together (issue 13): the whole ones in front of a bad frame are still
    published and acked as one by one, the bad one closes the connection, and nothing behind it
    is published (its readings were never acked: the device sends them again)."""
    secret = register_v2(proxy, "v2-batch")
    dev = session(secret)
    good = [dev.seal(reading(n))[1] for n in range(20)]
    _, later = dev.seal(reading(20))
    forged = bytearray(good[19])
    forged[-1] ^= 1
    sock = connect(proxy.config.proxy_port)
    sock.sendall(b"".join(good[:19]) + bytes(forged) + later)
    assert sorted(seq for seq, _ in read_acks(sock, dev, 19)) == list(range(1, 20))
    assert closed_by_peer(sock)
    wait_until(lambda: proxy.rejected("bad_tag", "v2-batch"), 5, what="the bad frame's rejection")
    wait_until(lambda: seqs(proxy, "v2-batch") == list(range(1, 20)), 5, what="the 19 good readings")
    again = connect(proxy.config.proxy_port)  # the device sends what was never acked
    again.sendall(good[19] + later)
    assert sorted(seq for seq, _ in read_acks(again, dev, 2)) == [20, 21]
    wait_until(lambda: seqs(proxy, "v2-batch") == list(range(1, 22)), 5, what="every reading once")
    again.close()


def test_a_reading_refused_for_good_gets_a_refusal_and_the_next_readings_flow(proxy):
    secret = register_v2(proxy, "v2-glitch")
    dev = session(secret)
    bad = {2: dict(GOOD, Temp=99.0), 4: dict(GOOD, Temp=-50.0)}
    frames = [dev.seal(v1.format_reading(bad.get(n, GOOD)))[1] for n in range(1, 7)]
    sock = connect(proxy.config.proxy_port)
    sock.sendall(b"".join(frames))
    answers = read_answers(sock, dev, 6)
    refused = {seq: code for kind, seq, code, _ in answers if kind == v2.REFUSAL}
    acked = sorted(seq for kind, seq, _, _ in answers if kind == v2.ACK)
    assert refused == {2: v2device.REASON_CODES["out_of_range"], 4: v2device.REASON_CODES["out_of_range"]}
    assert acked == [1, 3, 5, 6]
    wait_until(lambda: seqs(proxy, "v2-glitch") == [1, 3, 5, 6], 5, what="the good readings on the bus")
    wait_until(lambda: len(proxy.rejected("out_of_range", "v2-glitch")) == 2, 5, what="two rejected events")
    # the refused frame sent again (the refusal was lost): the same refusal, the connection still open
    sock.sendall(frames[1])
    (kind, seq, _, raw), = read_answers(sock, dev, 1)
    assert (kind, seq) == (v2.REFUSAL, 2) and raw == [a[3] for a in answers if a[1] == 2][0]
    sock.sendall(dev.seal(reading(7))[1])
    assert read_acks(sock, dev, 1)[0][0] == 7
    # a frame that does not verify gets no answer at all: the connection just closes
    forged = bytearray(dev.seal(v1.format_reading(bad[2]))[1])
    forged[-1] ^= 1
    sock.sendall(bytes(forged))
    sock.settimeout(5)
    assert sock.recv(4096) == b""
    # Acked once the broker had it; the monitor's copy may still be on its way.
    wait_until(lambda: seqs(proxy, "v2-glitch") == [1, 3, 5, 6, 7], 5, what="reading 7 on the bus")


def _refused(stack, sock: socket.socket, payload: bytes, reason: str, device: str) -> None:
    sock.sendall(payload)
    assert closed_by_peer(sock), reason
    wait_until(lambda: stack.rejected(reason, device), 5, what=f"rejected event {reason}")


def test_each_bad_frame_has_its_own_reason_and_nothing_is_published(proxy):
    secret = register_v2(proxy, "v2-victim")
    bystander = register_v2(proxy, "v2-bystander")
    dev = session(secret)
    sock = connect(proxy.config.proxy_port)
    sock.sendall(dev.seal(reading(0))[1])
    read_acks(sock, dev, 1)
    sock.close()
    port = proxy.config.proxy_port

    # lower counter: a genuine frame never seen before, older than the replay window (64 seqs)
    dev.counter.next_seq = 100
    _, hundred = dev.seal(reading(100))
    s = connect(port)
    s.sendall(hundred)
    read_acks(s, dev, 1)
    s.close()
    dev.counter.next_seq = 100 - v2.ReplayWindow.WINDOW
    _, old = dev.seal(reading(36))
    _refused(proxy, connect(port), old, "old_seq", "v2-victim")

    dev.counter.next_seq = 101
    _, good = dev.seal(reading(101))
    header = v2.header_size(4)
    flipped_tag = bytearray(good)
    flipped_tag[-1] ^= 0x01
    _refused(proxy, connect(port), bytes(flipped_tag), "bad_tag", "v2-victim")
    flipped_ct = bytearray(good)
    flipped_ct[header + 3] ^= 0x40
    _refused(proxy, connect(port), bytes(flipped_ct), "bad_tag", "v2-victim")
    flipped_seq = bytearray(good)
    flipped_seq[header - 3] ^= 0x01  # seq 101 -> 100: already accepted, so the tag must prove it
    _refused(proxy, connect(port), bytes(flipped_seq), "bad_tag", "v2-victim")

    oversize = bytearray(good[:header])
    oversize[header - 2:header] = (60000).to_bytes(2, "big")
    _refused(proxy, connect(port), bytes(oversize), "too_long", "~unidentified")

    stranger = v2device.Session(bytes(16), b"\xde\xad\xbe\xef", v2device.MemoryCounter())
    _refused(proxy, connect(port), stranger.seal(reading(1))[1], "unknown_kid", "~unidentified")

    s = connect(port)
    s.sendall(good[:40])
    s.shutdown(socket.SHUT_WR)
    assert closed_by_peer(s)
    wait_until(lambda: proxy.rejected("truncated", "~unidentified"), 5, what="truncated event")

    assert seqs(proxy, "v2-victim") == [1, 100]
    # the counter did not move for any refused frame: the genuine seq 101 is still accepted
    s = connect(port)
    s.sendall(good)
    assert read_acks(s, dev, 1)[0][0] == 101
    # and another device was never affected
    other = session(bystander)
    b = connect(port)
    b.sendall(other.seal(reading(1))[1])
    assert read_acks(b, other, 1)[0][0] == 1
    wait_until(lambda: seqs(proxy, "v2-victim") == [1, 100, 101] and seqs(proxy, "v2-bystander") == [1], 5,
               what="only the good readings on the bus")
    s.close()
    b.close()


@pytest.mark.parametrize("region", ["header", "ciphertext", "tag"])
def test_every_bit_flip_in_a_region_is_refused_through_the_gateway(proxy, region):
    secret = register_v2(proxy, f"v2-flip-{region}")
    dev = session(secret)
    _, good = dev.seal(reading(1))
    header = v2.header_size(4)
    bits = {"header": range(header * 8), "ciphertext": range(header * 8, (len(good) - 8) * 8, 37),
            "tag": range((len(good) - 8) * 8, len(good) * 8)}[region]
    for bit in bits:
        bad = bytearray(good)
        bad[bit // 8] ^= 1 << (bit % 8)
        # one source address per attempt: the proxy throttles an address after repeated failures
        s = connect(proxy.config.proxy_port, source=f"127.0.{2 + bit // 250}.{1 + bit % 250}")
        s.sendall(bytes(bad))
        s.shutdown(socket.SHUT_WR)  # a length grown by the flip shows up as truncated
        s.settimeout(5)
        try:
            assert s.recv(4096) == b"", f"bit {bit} was acknowledged"
        except ConnectionResetError:
            pass  # closed with our bytes unread: refused all the same
        s.close()
    assert seqs(proxy, f"v2-flip-{region}") == []
    s = connect(proxy.config.proxy_port)
    s.sendall(good)
    assert read_acks(s, dev, 1)[0][0] == 1
    s.close()


def test_a_v2_device_talking_v1_with_its_key_is_refused(proxy):
    secret = register_v2(proxy, "v2-downgrade")
    master = bytes.fromhex(secret["master_key"])
    as_text = (secret["master_key"][:16].encode(), secret["master_key"][16:].encode())
    for key, iv in ((master, master), as_text):
        wire = v1.encrypt(AES.new(key, AES.MODE_ECB).encrypt, iv, reading(1), "chained")
        s = connect(proxy.config.proxy_port)
        s.sendall(wire)
        assert closed_by_peer(s)
    wait_until(lambda: len(proxy.rejected("unknown_key")) >= 2, 5, what="two unknown_key refusals")
    assert proxy.ingest("v2-downgrade") == []


def test_ack_waits_for_the_broker(proxy, procs, broker):
    """With the broker down nothing is acknowledged; once it is back the reading reaches it and is acked."""
    from tests.support.broker import start_mosquitto

    secret = register_v2(proxy, "v2-puback")
    dev = session(secret)
    procs.stop(broker)
    s = connect(proxy.config.proxy_port)
    s.sendall(dev.seal(reading(1))[1])
    s.settimeout(1.0)
    with pytest.raises(TimeoutError):
        s.recv(4096)
    start_mosquitto(proxy.config, procs)
    assert read_acks(s, dev, 1, timeout=10)[0][0] == 1
    s.close()


def test_session_clocks_start_when_the_gateway_is_ready_for_the_next_frame():
    """Time spent on earlier frames (auth, PUBACK waits) never counts against the device."""
    from services.proxy.v2 import V2Session

    dev = v2device.Session(bytes(16), b"\x01\x02\x03\x04", v2device.MemoryCounter())
    one, two = dev.seal(reading(1))[1], dev.seal(reading(2))[1]
    session = V2Session(idle_timeout=60, reading_timeout=10, now=0.0)
    session.feed(one + two[:20], 0.0)
    assert session.next_frame(45.0).seq == 1  # the gateway was busy for 45 s
    assert session.next_frame(45.0) is None
    assert session.deadline() == (55.0, "reading_timeout")  # not 10.0: that is already past
    session.feed(two[20:], 50.0)
    assert session.next_frame(50.0).seq == 2
    assert session.deadline() == (110.0, "idle_timeout")


def test_revoking_a_v2_device_closes_its_connection_and_refuses_it(proxy):
    secret = register_v2(proxy, "v2-revoked")
    dev = session(secret)
    s = connect(proxy.config.proxy_port)
    s.sendall(dev.seal(reading(1))[1])
    assert read_acks(s, dev, 1)[0][0] == 1
    proxy.revoke("v2-revoked")
    assert closed_by_peer(s, 3)
    again = connect(proxy.config.proxy_port)
    again.sendall(dev.seal(reading(2))[1])
    assert closed_by_peer(again)
    wait_until(lambda: proxy.rejected("revoked", "v2-revoked"), 5, what="revoked refusal")
    assert seqs(proxy, "v2-revoked") == [1]


def _frame_and_keys(seq: int = 5) -> tuple[v2.Frame, v2.Keys]:
    secret = make_secret("v2")
    master, kid = bytes.fromhex(secret["master_key"]), bytes.fromhex(secret["key_id"])
    raw = session(secret, seq).seal(reading(0))[1]
    frame, _ = v2.read(raw)
    assert frame is not None
    return frame, v2.derive_keys(master, kid)


def test_auths_ack_is_written_only_if_it_is_whole_base64_of_this_frames_ack():
    """The proxy checks what auth hands it before the device gets it: exactly this frame's ack,
    in strict base64 (anything else is auth_protocol, never bytes half decoded)."""
    frame, keys = _frame_and_keys()
    good = base64.b64encode(v2.seal_ack(keys, frame.seq)).decode()
    assert _answer_bytes({"ack": good}, "ack", frame) == v2.seal_ack(keys, frame.seq)
    other = base64.b64encode(v2.seal_ack(keys, frame.seq + 1)).decode()
    for bad in (other, good[:-1], good + "=", " " + good, good[:8] + "\n" + good[8:], good.replace("A", "-"),
                good + good, "", None, 7, "====", good.encode()):
        if bad == good:
            continue
        with pytest.raises(Reject) as refused:
            _answer_bytes({"ack": bad}, "ack", frame)
        assert refused.value.reason == "auth_protocol"
