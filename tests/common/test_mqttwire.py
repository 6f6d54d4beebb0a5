"""The MQTT 3.1.1 codec: exact bytes out, packets back, incomplete and malformed input."""
from __future__ import annotations

import pytest

from services.common import mqttwire as wire


def test_publish_bytes_and_round_trip() -> None:
    packet = wire.publish("a/b", b"xyz", qos=1, retain=True, mid=0x1234)
    assert packet == b"\x33\x0a\x00\x03a/b\x12\x34xyz"
    dup = wire.publish("a/b", b"", qos=1, mid=7, dup=True)
    assert dup[0] == 0x3A
    parsed, used = wire.read_packet(packet + b"\xff")
    assert used == len(packet)
    msg = wire.parse_publish(parsed)
    assert (msg.topic, msg.payload, msg.qos, msg.retain, msg.dup, msg.mid) == (
        "a/b", b"xyz", 1, True, False, 0x1234)


def test_qos0_publish_has_no_packet_id() -> None:
    msg = wire.parse_publish(wire.read_packet(wire.publish("t", b"p", qos=0))[0])
    assert (msg.mid, msg.payload, msg.qos) == (None, b"p", 0)


@pytest.mark.parametrize("topic", ["t", "Pico/pico-1/Physiological_Data/Temperature", "ü/" + "x" * 300])
@pytest.mark.parametrize("size", [0, 5, 80, 200])
@pytest.mark.parametrize("retain", [False, True])
def test_a_qos0_publish_of_an_encoded_topic_is_the_same_packet(topic: str, size: int, retain: bool) -> None:
    payload = bytes(range(256))[:size]
    packet = wire.publish_qos0(wire.topic_field(topic), payload, retain)
    name = topic.encode()
    body = len(name).to_bytes(2, "big") + name + payload
    assert packet == bytes([0x31 if retain else 0x30]) + wire._length(len(body)) + body
    assert packet == wire.publish(topic, payload, qos=0, retain=retain)
    msg = wire.parse_publish(wire.read_packet(packet)[0])
    assert (msg.topic, msg.payload, msg.qos, msg.retain, msg.mid) == (topic, payload, 0, retain, None)


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, 2097151, 2097152])
def test_remaining_length_boundaries(size: int) -> None:
    packet = wire.publish("t", b"x" * size, qos=0)
    parsed, used = wire.read_packet(packet, max_size=1 << 22)
    assert used == len(packet) and wire.parse_publish(parsed).payload == b"x" * size
    assert wire.read_packet(packet[:-1], max_size=1 << 22) is None  # one byte short: need more


def test_every_prefix_of_a_stream_is_incomplete_not_an_error() -> None:
    stream = wire.puback(1) + wire.publish("x/y", b"12345", 1, False, 9)
    first, used = wire.read_packet(stream)
    assert (first.kind, wire.parse_mid(first)) == (wire.PUBACK, 1)
    rest = stream[used:]
    for cut in range(len(rest)):
        assert wire.read_packet(rest[:cut]) is None


def test_connect_subscribe_and_acks() -> None:
    packet = wire.connect("medsec-publisher", "publisher", "pw", clean_session=False, keepalive=15)
    assert packet[0] == 0x10 and packet[2:10] == b"\x00\x04MQTT\x04\xc0" and packet[10:12] == b"\x00\x0f"
    assert wire.connect("c", "u", "p", clean_session=True, keepalive=1)[9] == 0xC2
    assert wire.subscribe(5, [("a/+", 1)]) == b"\x82\x08\x00\x05\x00\x03a/+\x01"
    assert wire.puback(0xABCD) == b"\x40\x02\xab\xcd"
    assert wire.parse_connack(wire.read_packet(b"\x20\x02\x01\x00")[0]) == (True, 0)
    assert wire.parse_connack(wire.read_packet(b"\x20\x02\x00\x05")[0]) == (False, 5)
    assert wire.parse_suback(wire.read_packet(b"\x90\x04\x00\x05\x01\x80")[0]) == (5, [1, 0x80])


@pytest.mark.parametrize("data", [
    b"\x30\xff\xff\xff\xff\x01",  # remaining length of 5 bytes
    b"\x30\xff\xff\xff\x7f",  # 256 MB: over the limit
])
def test_malformed_headers_raise(data: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.read_packet(data)


def test_malformed_bodies_raise() -> None:
    with pytest.raises(wire.WireError):
        wire.parse_publish(wire.Packet(wire.PUBLISH, 0x02, b"\x00\x05ab"))  # topic runs past the end
    with pytest.raises(wire.WireError):
        wire.parse_publish(wire.Packet(wire.PUBLISH, 0x06, b"\x00\x00"))  # QoS 3
    with pytest.raises(wire.WireError):
        wire.parse_mid(wire.Packet(wire.PUBACK, 0, b"\x01"))
    with pytest.raises(wire.WireError):
        wire.parse_connack(wire.Packet(wire.CONNACK, 0, b"\x00"))


def test_acknowledgements_are_found_at_any_offset() -> None:
    pubrec, pubcomp = b"\x50\x02\x00\x09", b"\x70\x02\xff\xfe"
    stream = wire.publish("t", b"p", 1, False, 3) + wire.puback(0x0102) + wire.puback(7) + pubrec + pubcomp
    packet, used = wire.read_packet(stream)
    assert wire.ack_at(stream, 0) is None
    assert wire.ack_at(stream, used) == (wire.PUBACK, 0x0102)
    assert wire.ack_at(stream, used + 4) == (wire.PUBACK, 7)
    assert wire.ack_at(stream, used + 8) == (wire.PUBREC, 9)
    assert wire.ack_at(stream, used + 12) == (wire.PUBCOMP, 0xFFFE)
    assert wire.ack_at(stream, used + 13) is None  # truncated
    assert wire.ack_at(wire.pubrel(5), 0) is None  # not an acknowledgement the broker sends us
    assert wire.read_packet(stream, offset=used + 4) == (wire.Packet(wire.PUBACK, 0, b"\x00\x07"), 4)
