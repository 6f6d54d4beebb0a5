"""The MQTT 3.1.1 packets the async services use, as pure functions (bytes in, values out; no I/O).

`read_packet(buf) -> (packet, consumed)`, or None when more bytes are needed;
WireError when the bytes are malformed. The asyncio client around it is
services/common/mqttclient.py.

Why not paho in the async services: each reading fans out to 12 QoS 1
publishes in the publisher, and paho spends most of its CPU on per-packet
bookkeeping (a thread lock, a properties object and a reason code per PUBACK,
one socket write per publish). Encoding the packets directly and writing a
whole batch at once cuts that several-fold (measured 8x; see the README,
"Publisher").
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, SUBACK = 1, 2, 3, 4, 5, 6, 7, 8, 9
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14
PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
MAX_PACKET = 1 << 20
_U16 = struct.Struct("!H").pack  # the bus carries ~400-byte messages; anything near this is not ours


class WireError(ValueError):
    """Bytes from the broker that are not valid MQTT 3.1.1: the connection is dropped and reopened."""


@dataclass(frozen=True)
class Packet:
    kind: int
    flags: int
    body: bytes


@dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    mid: int | None


def _length(n: int) -> bytes:
    if n < 16384:  # the bus and public messages: one or two bytes, without the loop
        return bytes((n,)) if n < 128 else bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _text(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError("MQTT strings are at most 65535 bytes")
    return struct.pack("!H", len(value)) + value


def connect(client_id: str, username: str, password: str, clean_session: bool, keepalive: int) -> bytes:
    flags = 0xC0 | (0x02 if clean_session else 0)  # username, password
    body = (_text(b"MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
            + _text(client_id.encode()) + _text(username.encode()) + _text(password.encode()))
    return b"\x10" + _length(len(body)) + body


def subscribe(mid: int, topics: list[tuple[str, int]]) -> bytes:
    body = struct.pack("!H", mid) + b"".join(_text(t.encode()) + bytes([q]) for t, q in topics)
    return b"\x82" + _length(len(body)) + body


def topic_field(topic: str) -> bytes:
    """A PUBLISH's topic as the packet carries it: its length, then its UTF-8 bytes."""
    name = topic.encode()
    return _U16(len(name)) + name


def publish_qos0(field: bytes, payload: bytes, retain: bool = False) -> bytes:
    """A QoS 0 PUBLISH of a topic already encoded by topic_field (the publisher encodes each of
    its value topics once: seven of a reading's eight publishes are these, issue 13)."""
    size = len(field) + len(payload)
    header = 0x31 if retain else 0x30
    head = bytes((header, size)) if size < 128 else bytes((header,)) + _length(size)
    return head + field + payload


def publish(topic: str, payload: bytes, qos: int = 1, retain: bool = False, mid: int = 0,
            dup: bool = False) -> bytes:
    if not qos:
        return publish_qos0(topic_field(topic), payload, retain)
    name = topic.encode()
    header = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    size = 4 + len(name) + len(payload)
    head = bytes((header, size)) if size < 128 else bytes((header,)) + _length(size)
    return b"".join((head, _U16(len(name)), name, _U16(mid), payload))


def puback(mid: int) -> bytes:
    return b"\x40\x02" + struct.pack("!H", mid)


def pubrel(mid: int) -> bytes:
    """QoS 2, second half: the broker stored the message (PUBREC); release it to its subscribers."""
    return b"\x62\x02" + struct.pack("!H", mid)


def read_packet(buf: bytes | bytearray, max_size: int = MAX_PACKET,
                offset: int = 0) -> tuple[Packet, int] | None:
    """The first packet in buf[offset:] and the bytes it used; None if incomplete.

    Raises WireError for malformed input.
    """
    n = len(buf)
    if n - offset < 2:
        return None
    length = 0
    for i in range(1, 5):
        if offset + i >= n:
            return None
        byte = buf[offset + i]
        length += (byte & 0x7F) << (7 * (i - 1))
        if not byte & 0x80:
            break
    else:
        raise WireError("remaining length longer than 4 bytes")
    if length > max_size:
        raise WireError(f"packet of {length} bytes exceeds {max_size}")
    start = offset + i + 1
    end = start + length
    if n < end:
        return None
    first = buf[offset]
    return Packet(first >> 4, first & 0x0F, bytes(buf[start:end])), end - offset


_ACKS = {0x40: PUBACK, 0x50: PUBREC, 0x70: PUBCOMP}


def ack_at(buf: bytes | bytearray, offset: int) -> tuple[int, int] | None:
    """(kind, packet id) if a PUBACK, PUBREC or PUBCOMP starts at offset, else None: the fast path
    for the acknowledgements of a dozen publishes per reading, without a Packet."""
    if len(buf) - offset >= 4 and buf[offset + 1] == 0x02 and (kind := _ACKS.get(buf[offset])):
        return kind, (buf[offset + 2] << 8) | buf[offset + 3]
    return None


def parse_publish(packet: Packet) -> Publish:
    body = packet.body
    qos = (packet.flags >> 1) & 0x03
    if qos > 2 or len(body) < 2:
        raise WireError("malformed PUBLISH")
    (topic_len,) = struct.unpack_from("!H", body)
    pos = 2 + topic_len
    mid = None
    if qos:
        if len(body) < pos + 2:
            raise WireError("PUBLISH too short for its packet id")
        (mid,) = struct.unpack_from("!H", body, pos)
        pos += 2
    elif len(body) < pos:
        raise WireError("PUBLISH too short for its topic")
    topic = body[2:2 + topic_len].decode("utf-8", "replace")
    return Publish(topic, body[pos:], qos, bool(packet.flags & 0x01), bool(packet.flags & 0x08), mid)


def parse_mid(packet: Packet) -> int:
    if len(packet.body) < 2:
        raise WireError("packet too short for its packet id")
    return struct.unpack_from("!H", packet.body)[0]


def parse_connack(packet: Packet) -> tuple[bool, int]:
    """(session present, return code); return code 0 means accepted."""
    if len(packet.body) != 2:
        raise WireError("malformed CONNACK")
    return bool(packet.body[0] & 0x01), packet.body[1]


def parse_suback(packet: Packet) -> tuple[int, list[int]]:
    if len(packet.body) < 3:
        raise WireError("malformed SUBACK")
    return struct.unpack_from("!H", packet.body)[0], list(packet.body[2:])
