# Work-mode protocol adapter for v2 (docs/protocol-v2.md): every reading is
# kept in a bounded ring until the gateway's authenticated ack for its seq
# arrives; after a reconnect every unacknowledged frame is sent again (same
# seq, same bytes: the gateway drops the duplicate and acks it again).
import binascii

import v1codec
import v2codec
from clock import log, ticks_diff, ticks_ms
from netbase import NetError

COUNTER_FILE = "v2seq"
COUNTER_STEP = 1000
# A reading the gateway refuses (e.g. out_of_range: a probe glitch) is never acked; the gateway
# closes the link at it, and it would be resent first at every reconnect, holding back every
# later reading. It is dropped after MAX_TRIES links that ended within REFUSAL_MS of sending it:
# a refusal takes milliseconds, a broker or auth outage ends the link after the gateway's 5 s waits.
MAX_TRIES = 3
REFUSAL_MS = 2000


class V2Link:
    name = "v2"

    def __init__(self, settings):
        master = binascii.unhexlify(settings.get("v2_master_key") or "")
        kid = binascii.unhexlify(settings.get("v2_key_id") or "")
        path = COUNTER_FILE if not settings.root else settings.root.rstrip("/") + "/" + COUNTER_FILE
        self.session = v2codec.Session(master, kid, v2codec.FileCounter(path, settings.get("v2_step") or COUNTER_STEP))
        self.size = settings.get("ring_size") or 64
        self.ring = []  # [(seq, frame, sent_ms)] oldest first, at most self.size
        self.buf = b""
        self.acked = 0
        self.dropped = 0
        self.refused = 0
        self.live = False  # a link is up and the ring went out on it
        self.tries = (None, 0)  # (seq of the oldest reading, links lost just after sending it)

    def reading(self, values):
        seq, frame = self.session.seal(v1codec.format_reading(values))
        if len(self.ring) >= self.size:
            # full: the oldest unacknowledged reading gives way (bounded memory on a 264 KB device)
            old = self.ring.pop(0)
            self.dropped += 1
            log("ring_overflow", dropped_seq=old[0], size=self.size)
        self.ring.append((seq, frame, ticks_ms()))
        return [frame]

    def connected(self):
        self.buf = b""
        self.live = True
        now = ticks_ms()
        self.ring = [(seq, frame, now) for seq, frame, _ in self.ring]
        if self.ring:
            log("resend", frames=len(self.ring), first_seq=self.ring[0][0])
        return [frame for _, frame, _ in self.ring]

    def lost(self):
        """The link ended: count a try against the oldest reading if it went out just before."""
        if not self.live:
            return
        self.live = False
        if not self.ring or ticks_diff(ticks_ms(), self.ring[0][2]) > REFUSAL_MS:
            return
        seq = self.ring[0][0]
        tries = self.tries[1] + 1 if self.tries[0] == seq else 1
        self.tries = (seq, tries)
        if tries >= MAX_TRIES:
            self.ring.pop(0)
            self.refused += 1
            self.tries = (None, 0)
            log("reading_refused", seq=seq, tries=tries)

    def received(self, data):
        self.buf += data
        while self.buf:
            try:
                seq, used = self.session.read_ack(self.buf)
            except Exception as e:  # V2Error; any other failure on a forged ack must not crash the device
                self.buf = b""
                reason = getattr(e, "reason", "bad_ack")
                log("bad_ack", reason=reason)
                raise NetError("bad ack from gateway: " + reason)
            if seq is None:
                return
            self.buf = self.buf[used:]
            before = len(self.ring)
            self.ring = [item for item in self.ring if item[0] != seq]
            if len(self.ring) < before:
                self.acked += 1

    def pending(self):
        return len(self.ring)
