"""medsec protocol v2, device side (MicroPython on the Pico; also runs on CPython for tests).

Spec: docs/protocol-v2.md. Needs ccm.py beside it on the device (/lib/ccm.py is a
copy of services/common/ccm.py: AES-CCM from cryptolib ECB + CBC, HKDF-SHA256).

API:
    s = Session(master_key, kid, counter)     # 16-byte key and key id from `medsec device add --protocol v2`
    seq, frame = s.seal(reading_bytes)        # bytes to write to the TCP socket
    seq, used = s.read_ack(buf)               # (None, 0): need more bytes; else the acked seq
                                              # raises V2Error on a forged, corrupt or foreign ack
    counter = FileCounter("/v2seq", step=1000)  # sequence numbers that survive reboots
    counter = MemoryCounter()                 # tests and the simulator

Counter rule (OSCORE appendix B.1.1): the file holds a ceiling C; every seq
ever used is below C. At boot the device starts at C and, before it uses a seq
at or above the stored ceiling, writes ceiling = seq + step (write-ahead). A
crash at any point therefore never reuses a seq; at most `step` numbers are
skipped per boot. step=1000 at one reading per second is one flash write per
~17 minutes.
"""
try:
    import ccm
except ImportError:  # CPython: the gateway's copy of the same file
    from services.common import ccm

import os

DATA = 0xC2
ACK = 0xC3
VERSION = 2
TAG = 8
SEQ_BYTES = 5
SEQ_MAX = (1 << 40) - 1
MAX_PLAINTEXT = 256
SALT = b"medsec-v2"


class V2Error(ValueError):
    def __init__(self, reason, detail):
        super().__init__(reason + ": " + detail)
        self.reason = reason
        self.detail = detail


class MemoryCounter:
    def __init__(self, start=1):
        self.next_seq = start

    def take(self):
        seq = self.next_seq
        self.next_seq = seq + 1
        return seq


class FileCounter:
    """Sequence numbers that only grow, also across reboots (write-ahead ceiling in a file)."""

    def __init__(self, path, step=1000):
        self.path = path
        self.step = step
        self.ceiling = self._load()
        self.next_seq = max(self.ceiling, 1)

    def _load(self):
        try:
            with open(self.path) as f:
                return int(f.read().strip() or "0")
        except (OSError, ValueError):
            return 0

    def _store(self, value):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(value))
        os.rename(tmp, self.path)  # atomic on littlefs and POSIX: old or new, never half
        self.ceiling = value

    def take(self):
        seq = self.next_seq
        if seq > SEQ_MAX:
            raise V2Error("seq_exhausted", "sequence numbers used up: the device needs new keys")
        if seq >= self.ceiling:
            self._store(seq + self.step)
        self.next_seq = seq + 1
        return seq


def derive(master, kid):
    """(device->gateway key, gateway->device key, common IV): HKDF-SHA256, key id in every label."""
    return (
        ccm.hkdf_sha256(master, SALT, b"medsec v2 key device->gateway " + kid, 16),
        ccm.hkdf_sha256(master, SALT, b"medsec v2 key gateway->device " + kid, 16),
        ccm.hkdf_sha256(master, SALT, b"medsec v2 common iv " + kid, 13),
    )


def nonce(common_iv, kid, seq):
    piv = bytes([len(kid)]) + bytes(7 - len(kid)) + kid + seq.to_bytes(SEQ_BYTES, "big")
    return bytes(a ^ b for a, b in zip(piv, common_iv))  # noqa: B905 (MicroPython's zip takes no strict flag)


def header(kind, kid, seq, body_len):
    head = bytes([kind, VERSION, 0, len(kid)]) + kid
    return head + seq.to_bytes(SEQ_BYTES, "big") + body_len.to_bytes(2, "big")


class Session:
    def __init__(self, master, kid, counter):
        if len(master) != 16 or not 1 <= len(kid) <= 7:
            raise V2Error("bad_key", "master key must be 16 bytes and key id 1..7 bytes")
        self.kid = kid
        self.counter = counter
        self.d2g, self.g2d, self.common_iv = derive(master, kid)

    def seal(self, plaintext):
        """Encrypt one reading: returns (seq, frame bytes)."""
        if not 0 < len(plaintext) <= MAX_PLAINTEXT:
            raise V2Error("too_long", "reading must be 1..256 bytes")
        seq = self.counter.take()
        head = header(DATA, self.kid, seq, len(plaintext) + TAG)
        body = ccm.encrypt(self.d2g, nonce(self.common_iv, self.kid, seq), head, plaintext, TAG)
        return seq, head + body

    def read_ack(self, buf):
        """Parse and verify the first ack in buf: (seq, bytes used) or (None, 0) for need more."""
        n = len(buf)
        if n >= 1 and buf[0] != ACK:
            raise V2Error("bad_type", "not an ack frame")
        if n >= 2 and buf[1] != VERSION:
            raise V2Error("bad_version", "not version 2")
        if n < 4:
            return None, 0
        k = buf[3]
        if k != len(self.kid):
            raise V2Error("unknown_kid", "ack for another key id")
        size = 4 + k + SEQ_BYTES + 2 + TAG
        if n < size:
            return None, 0
        frame = bytes(buf[:size])
        head, tag = frame[:size - TAG], frame[size - TAG:]
        length = int.from_bytes(head[size - TAG - 2:size - TAG], "big")
        if head[2] != 0 or head[4:4 + k] != self.kid or length != TAG:
            raise V2Error("bad_header", "ack header does not match this device")
        seq = int.from_bytes(head[4 + k:4 + k + SEQ_BYTES], "big")
        try:
            ccm.decrypt(self.g2d, nonce(self.common_iv, self.kid, seq), head, tag, TAG)
        except ccm.CcmError:
            raise V2Error("bad_tag", "ack tag does not verify")  # noqa: B904 (MicroPython style)
        return seq, size
