"""The benchmark's dashboard: one MQTT subscriber in a process of its own, cheap per message.

    python -m benchmarks.subscriber HOST PORT USER TOPIC QOS   (password on stdin's first line)

It takes everything under TOPIC (QoS 1: it acknowledges every message, as a dashboard that
must not miss readings does) and, for each `Pico/<id>/json`, notes the arrival time and the
reading's marker (its "Temp" value, which the benchmark's devices count up). A plain socket and
a hand-written parser keep its CPU per message well below the broker's, so the figures measure
the gateway and the broker, not the benchmark (a paho subscriber took 0.37 ms per reading of
12 messages: it was the bottleneck).

Commands on stdin, one per line; each answers one line of JSON on stdout:
  reset             forget what arrived            -> {"ok": true}
  wait N SECONDS    until N readings arrived (or the time is up)
                    -> {"readings", "others", "arrivals": {device: [[perf_counter, marker], ...]}}
Its first line on stdout is {"ready": true} once the broker acknowledged the subscription.
"""
from __future__ import annotations

import json
import socket
import sys
import threading
import time

from services.common import mqttwire as wire

MARK = b'"Temp":'


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrivals: dict[str, list[tuple[float, float]]] = {}
        self.readings = 0
        self.others = 0

    def reset(self) -> None:
        with self.lock:
            self.arrivals, self.readings, self.others = {}, 0, 0

    def reading(self, topic: bytes, payload: bytes, now: float) -> None:
        start = payload.find(MARK) + len(MARK)
        end = payload.find(b",", start)
        device = topic[5:-5].decode()  # Pico/<id>/json
        with self.lock:
            self.arrivals.setdefault(device, []).append((now, float(payload[start:end])))
            self.readings += 1


def serve(sock: socket.socket, tally: Tally) -> None:
    """Read PUBLISH packets for ever; acknowledge QoS 1 ones in one write per read."""
    buf = bytearray()
    while True:
        data = sock.recv(1 << 18)
        if not data:
            return
        now = time.perf_counter()
        buf += data
        acks = bytearray()
        pos, n = 0, len(buf)
        while pos + 2 <= n:
            first = buf[pos]
            length, shift, i = 0, 0, pos + 1
            while i < n:
                byte = buf[i]
                length |= (byte & 0x7F) << shift
                shift += 7
                i += 1
                if not byte & 0x80:
                    break
            else:
                break
            end = i + length
            if end > n:
                break
            if first >> 4 == wire.PUBLISH:
                tlen = (buf[i] << 8) | buf[i + 1]
                topic = bytes(buf[i + 2:i + 2 + tlen])
                body = i + 2 + tlen
                if first & 0x06:
                    acks += b"\x40\x02" + buf[body:body + 2]
                    body += 2
                if topic.endswith(b"/json"):
                    tally.reading(topic, bytes(buf[body:end]), now)
                else:
                    tally.others += 1
            pos = end
        del buf[:pos]
        if acks:
            sock.sendall(acks)


def connect(host: str, port: int, user: str, password: str, topic: str, qos: int) -> socket.socket:
    sock = socket.create_connection((host, port))
    sock.sendall(wire.connect(f"bench-sub-{time.monotonic_ns() % 10**9}", user, password, True, 60))
    sock.sendall(wire.subscribe(1, [(topic, qos)]))
    buf = bytearray()
    got: set[int] = set()
    while got != {wire.CONNACK, wire.SUBACK}:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("broker closed the connection")
        buf += data
        while (found := wire.read_packet(buf)) is not None:
            packet, used = found
            del buf[:used]
            if packet.kind == wire.CONNACK and wire.parse_connack(packet)[1] != 0:
                raise ConnectionError("broker refused the subscriber")
            if packet.kind == wire.SUBACK and any(c >= 0x80 for c in wire.parse_suback(packet)[1]):
                raise ConnectionError("broker refused the subscription")
            got.add(packet.kind)
    return sock


def main() -> int:
    host, port, user, topic, qos = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    password = sys.stdin.readline().strip()
    tally = Tally()
    sock = connect(host, port, user, password, topic, qos)
    threading.Thread(target=serve, args=(sock, tally), daemon=True).start()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if words == ["reset"]:
            tally.reset()
            print(json.dumps({"ok": True}), flush=True)
        elif len(words) == 3 and words[0] == "wait":
            deadline = time.monotonic() + float(words[2])
            while tally.readings < int(words[1]) and time.monotonic() < deadline:
                time.sleep(0.01)
            with tally.lock:
                answer = {"readings": tally.readings, "others": tally.others, "arrivals": tally.arrivals}
            print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
