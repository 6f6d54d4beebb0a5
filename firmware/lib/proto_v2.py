# Work-mode protocol adapter for v2 (docs/protocol-v2.md): every reading is
# kept in a bounded ring until the gateway answers for its seq. Two answers end
# a reading's wait, both verified under the gateway->device key: an ack (it is on
# the gateway's bus) or a refusal (refused for good, e.g. out_of_range: dropped).
# Nothing else drops a reading: a link that ends without an answer (gateway
# restarting, throttling, full, an outage) only means "send it again later";
# app.py backs off on such links. After a reconnect every unanswered frame is
# sent again (same seq, same bytes: the gateway answers a duplicate again).
# A link that stays open but brings no answer for ack_timeout_ms while readings
# wait (a half-open TCP link, a stalled gateway) is ended by app.py as if it
# had dropped: stalled() says when.
import binascii

import v1codec
from clock import log, ticks_diff, ticks_ms
from netbase import NetError

try:
    import v2device
except ImportError:  # CPython host runs: the gateway's copy of the same file
    from services.common import v2device

COUNTER_FILE = "v2seq"
COUNTER_STEP = 1000


class V2Link:
    name = "v2"

    def __init__(self, settings):
        master = binascii.unhexlify(settings.get("v2_master_key") or "")
        kid = binascii.unhexlify(settings.get("v2_key_id") or "")
        path = COUNTER_FILE if not settings.root else settings.root.rstrip("/") + "/" + COUNTER_FILE
        counter = v2device.FileCounter(path, settings.get("v2_step") or COUNTER_STEP)
        if counter.lost:
            log("counter_lost", detail="no intact copy of the v2 counter; nothing is sent until re-keyed")
        self.session = v2device.Session(master, kid, counter)
        self.size = settings.get("ring_size") or 64
        self.ring = []  # [(seq, frame)] oldest first, at most self.size
        self.buf = b""
        self.acked = 0
        self.dropped = 0  # given way in a full ring
        self.refused = 0  # dropped on the gateway's verified refusal
        self.answered = False  # a verified answer came on the current link
        self.progress_ms = ticks_ms()  # the link's last sign of life: connected, answered, or ring refilled

    def reading(self, values):
        try:
            seq, frame = self.session.seal(v1codec.format_reading(values))
        except (ValueError, OSError) as e:  # V2Error (counter_lost, seq_exhausted) or a flash write failing
            log("reading_not_sealed", reason=getattr(e, "reason", "flash_error"))
            return []
        if not self.ring:
            self.progress_ms = ticks_ms()  # nothing was waiting: the wait for an answer starts now
        if len(self.ring) >= self.size:
            # full: the oldest unanswered reading gives way (bounded memory on a 264 KB device)
            old = self.ring.pop(0)
            self.dropped += 1
            log("ring_overflow", dropped_seq=old[0], size=self.size)
        self.ring.append((seq, frame))
        return [frame]

    def connected(self):
        self.buf = b""
        self.answered = False
        self.progress_ms = ticks_ms()
        if self.ring:
            log("resend", frames=len(self.ring), first_seq=self.ring[0][0])
        return [frame for _, frame in self.ring]

    def lost(self):
        """The link ended. True if it brought a verified answer (reconnect soon), False if it
        brought none (a gateway that accepts and closes, or is away: back off)."""
        answered, self.answered = self.answered, False
        return answered

    def received(self, data):
        self.buf += data
        while self.buf:
            try:
                kind, seq, code, used = self.session.read_answer(self.buf)
            except Exception as e:  # V2Error; any other failure on a forged answer must not crash the device
                self.buf = b""
                reason = getattr(e, "reason", "bad_answer")
                log("bad_answer", reason=reason)
                raise NetError("bad answer from gateway: " + reason)
            if kind is None:
                return
            self.buf = self.buf[used:]
            self.answered = True
            self.progress_ms = ticks_ms()
            self._answer(kind, seq, code)

    def _answer(self, kind, seq, code):
        for i in range(len(self.ring)):
            if self.ring[i][0] == seq:
                self.ring.pop(i)
                break
        else:  # verified, but for no reading waiting here (answered before): nothing to drop
            if kind == v2device.REFUSAL:
                log("refusal_ignored", seq=seq, reason=v2device.reason_name(code))
            return
        if kind == v2device.ACK:
            self.acked += 1
        else:
            self.refused += 1
            log("reading_refused", seq=seq, reason=v2device.reason_name(code))

    def pending(self):
        return len(self.ring)

    def stalled(self, now, timeout_ms):
        """Readings wait and the link has shown no sign of life for timeout_ms."""
        return bool(self.ring) and ticks_diff(now, self.progress_ms) > timeout_ms
