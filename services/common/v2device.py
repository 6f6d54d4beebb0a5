# ruff: noqa: UP031  (MicroPython subset: %-formatting, no f-strings)
"""medsec protocol v2: the frame layout, and the device's half (docs/protocol-v2.md).

One file for the Pico (MicroPython, copied to /lib/v2device.py by firmware/Makefile),
the simulator (services/sim/v2.py) and the gateway (services/common/v2.py imports the
layout from here). Like ccm.py it runs unchanged on CPython and MicroPython: no
dataclasses, no f-strings, no typing imports, no keyword arguments to int methods.

API:
    s = Session(master_key, kid, counter)   # 16-byte key, 1..7-byte key id (medsec device add --protocol v2)
    seq, frame = s.seal(reading_bytes)      # bytes to write to the TCP socket
    kind, seq, code, used = s.read_answer(buf)
        # (None, 0, 0, 0): need more bytes; kind ACK: reading `seq` is on the gateway's bus;
        # kind REFUSAL: reading `seq` is refused for good, `code` says why (reason_name(code)).
        # Raises V2Error for anything that is not a verified answer of this device.
    counter = FileCounter("/v2seq", step=1000)  # sequence numbers that survive reboots and corrupt copies
    counter = MemoryCounter()                   # tests and benchmarks

The gateway's half (verify readings, seal acks and refusals, the replay window) is
services/common/v2.py; it reads headers with parse_header() and builds nonces with nonce().
"""
import binascii
import hashlib
import os

try:
    import ccm
except ImportError:  # CPython: the package's copy of the same file
    from services.common import ccm

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

DATA = const(0xC2)  # device -> gateway: one reading
ACK = const(0xC3)  # gateway -> device: the reading with this seq is on the internal bus
REFUSAL = const(0xC4)  # gateway -> device: the reading with this seq is refused for good
VERSION = const(2)
KID_MIN = const(1)
KID_MAX = const(7)  # 7 = nonce length 13 - 6 (OSCORE's bound for an ID in the nonce)
SEQ_BYTES = const(5)  # OSCORE's maximum Partial IV: 2**40 readings
SEQ_MAX = (1 << 40) - 1
TAG = const(8)
NONCE = const(13)
MASTER_KEY = const(16)
MAX_PLAINTEXT = const(256)
MAX_BODY = MAX_PLAINTEXT + TAG
ACK_BODY = TAG  # empty plaintext: the tag authenticates the header
REFUSAL_BODY = TAG + 1  # one byte of reason code, then the tag
# Set in the first byte of a refusal's nonce block: that byte is len(kid) (1..7) for readings
# and acks, so a refusal's nonce never equals an ack's (or a reading's) for any kid and seq.
REFUSAL_NONCE = const(0x80)

SALT = b"medsec-v2"
INFO_D2G = b"medsec v2 key device->gateway "
INFO_G2D = b"medsec v2 key gateway->device "
INFO_IV = b"medsec v2 common iv "

# Refusal reason codes (the byte inside a refusal): stable, shared with logs and events.
# Any other value is still a refusal (a newer gateway's reason): the device drops the reading.
REASON_CODES = {
    "not_json": 1,
    "missing_field": 2,
    "unknown_field": 3,
    "not_string": 4,
    "not_numeric": 5,
    "out_of_range": 6,
    "refused": 255,  # any other permanent refusal of a verified reading
}


def reason_code(reason):
    return REASON_CODES.get(reason, 255)


def reason_name(code):
    for name in REASON_CODES:
        if REASON_CODES[name] == code:
            return name
    return "refused"


class V2Error(ValueError):
    """Bytes no honest peer sends, or a counter that cannot be trusted; `reason` is a stable code."""

    def __init__(self, reason, detail):
        super().__init__(reason + ": " + detail)
        self.reason = reason
        self.detail = detail


# --- frame layout (both directions, docs/protocol-v2.md "Frames") ---

def header_size(kid_len):
    return 4 + kid_len + SEQ_BYTES + 2


def header(kind, kid, seq, body_len):
    if not 1 <= seq <= SEQ_MAX:
        raise V2Error("bad_seq", "sequence number must be 1..2**40-1")
    head = bytes([kind, VERSION, 0, len(kid)]) + kid
    return head + seq.to_bytes(SEQ_BYTES, "big") + body_len.to_bytes(2, "big")


def parse_header(buf, kinds, max_body=MAX_BODY):
    """The first frame's header in buf: None (need more bytes) or (kind, kid_len, seq, header size,
    body length). `kinds` are the frame types the reader expects. Raises V2Error at the first
    byte no peer sends, so an oversize length is refused before its body is read."""
    n = len(buf)
    if n >= 1 and buf[0] not in kinds:
        raise V2Error("bad_type", "frame type %d not expected here" % buf[0])
    if n >= 2 and buf[1] != VERSION:
        raise V2Error("bad_version", "version %d, expected 2" % buf[1])
    if n >= 3 and buf[2] != 0:
        raise V2Error("bad_flags", "reserved flags %d must be 0" % buf[2])
    if n < 4:
        return None
    kid_len = buf[3]
    if not KID_MIN <= kid_len <= KID_MAX:
        raise V2Error("bad_kid_length", "key id length %d outside 1..7" % kid_len)
    size = header_size(kid_len)
    if n < size:
        return None
    seq = int.from_bytes(bytes(buf[4 + kid_len:size - 2]), "big")
    if seq == 0:
        raise V2Error("bad_seq", "sequence number 0 is never sent")
    length = (buf[size - 2] << 8) | buf[size - 1]
    kind = buf[0]
    if kind == ACK:
        if length != ACK_BODY:
            raise V2Error("bad_length", "ack body of %d bytes, expected %d" % (length, ACK_BODY))
    elif kind == REFUSAL:
        if length != REFUSAL_BODY:
            raise V2Error("bad_length", "refusal body of %d bytes, expected %d" % (length, REFUSAL_BODY))
    elif length > max_body:
        raise V2Error("too_long", "body length %d exceeds %d" % (length, max_body))
    elif length <= TAG:
        raise V2Error("too_short", "body length %d leaves no reading beside the tag" % length)
    return kind, kid_len, seq, size, length


# --- keys and nonces ---

def derive(master, kid):
    """(device->gateway key, gateway->device key, common IV): HKDF-SHA256, key id in every label."""
    if len(master) != MASTER_KEY:
        raise V2Error("bad_key", "master key must be 16 bytes")
    if not KID_MIN <= len(kid) <= KID_MAX:
        raise V2Error("bad_kid_length", "key id must be 1..7 bytes")
    return (
        ccm.hkdf_sha256(master, SALT, INFO_D2G + kid, 16),
        ccm.hkdf_sha256(master, SALT, INFO_G2D + kid, 16),
        ccm.hkdf_sha256(master, SALT, INFO_IV + kid, NONCE),
    )


def nonce(common_iv, kid, seq, kind=DATA):
    """OSCORE's construction (RFC 8613 5.2): len(kid) | kid padded to 7 | seq padded to 5, XOR common IV.
    A refusal sets bit 7 of the first byte (REFUSAL_NONCE): its own nonce space under the ack's key."""
    first = len(kid) | (REFUSAL_NONCE if kind == REFUSAL else 0)
    piv = bytes([first]) + bytes(KID_MAX - len(kid)) + kid + seq.to_bytes(SEQ_BYTES, "big")
    return (int.from_bytes(piv, "big") ^ int.from_bytes(common_iv, "big")).to_bytes(NONCE, "big")


# --- the device ---

def seal_reading(d2g, common_iv, kid, seq, plaintext):
    """A reading frame for `seq`; d2g is the device->gateway key's ccm.Ccm."""
    if not 0 < len(plaintext) <= MAX_PLAINTEXT:
        raise V2Error("too_long", "reading must be 1..256 bytes")
    head = header(DATA, kid, seq, len(plaintext) + TAG)
    return head + d2g.encrypt(nonce(common_iv, kid, seq), head, plaintext)


def open_answer(g2d, common_iv, kid, buf):
    """The first answer in buf, verified under g2d (the gateway->device key's ccm.Ccm):
    (kind, seq, reason code, bytes used), or (None, 0, 0, 0) when more bytes are needed.
    Raises V2Error for anything else (a reading reflected back, another device's answer,
    a changed byte, an ack's tag under a refusal's type)."""
    head = parse_header(buf, (ACK, REFUSAL))
    if head is None:
        return None, 0, 0, 0
    kind, kid_len, seq, size, length = head
    end = size + length
    if len(buf) < end:
        return None, 0, 0, 0
    frame = bytes(buf[:end])
    if frame[4:4 + kid_len] != kid:
        raise V2Error("unknown_kid", "answer for another key id")
    try:
        plain = g2d.decrypt(nonce(common_iv, kid, seq, kind), frame[:size], frame[size:])
    except ccm.CcmError:
        raise V2Error("bad_tag", "answer tag does not verify")  # noqa: B904 (MicroPython style)
    return kind, seq, (plain[0] if kind == REFUSAL else 0), end


class Session:
    """One device: its keys (each AES-CCM built once) and its counter."""

    def __init__(self, master, kid, counter):
        d2g, g2d, self.common_iv = derive(master, kid)
        self.kid = kid
        self.counter = counter
        self.d2g = ccm.Ccm(d2g, TAG)
        self.g2d = ccm.Ccm(g2d, TAG)

    def seal(self, plaintext):
        """Encrypt one reading under the next seq: (seq, frame bytes)."""
        if not 0 < len(plaintext) <= MAX_PLAINTEXT:
            raise V2Error("too_long", "reading must be 1..256 bytes")
        seq = self.counter.take()
        return seq, seal_reading(self.d2g, self.common_iv, self.kid, seq, plaintext)

    def read_answer(self, buf):
        """open_answer() with this device's key: (kind, seq, reason code, used) or (None, 0, 0, 0)."""
        return open_answer(self.g2d, self.common_iv, self.kid, buf)


class MemoryCounter:
    def __init__(self, start=1):
        self.next_seq = start

    def take(self):
        seq = self.next_seq
        if seq > SEQ_MAX:
            raise V2Error("seq_exhausted", "sequence numbers used up: the device needs new keys")
        self.next_seq = seq + 1
        return seq


def _check(text):
    return binascii.hexlify(hashlib.sha256(b"medsec v2 counter " + text.encode()).digest()[:4]).decode()


def record(ceiling, step):
    """One copy's text: "ceiling step check", check = first 4 bytes of SHA-256 (hex)."""
    text = "%d %d" % (ceiling, step)
    return text + " " + _check(text) + "\n"


def parse_record(data):
    """(ceiling, step) of a copy's bytes, or None when it is not a whole, intact record."""
    try:
        parts = data.decode().split()
    except Exception:  # noqa: BLE001 (garbage bytes: UnicodeError here, other types on MicroPython)
        return None
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    if parts[2] != _check(parts[0] + " " + parts[1]):
        return None
    ceiling, step = int(parts[0]), int(parts[1])
    if not 1 <= ceiling <= SEQ_MAX + 1 or step < 1:
        return None
    return ceiling, step


def _legacy_value(data):
    """The ceiling of earlier firmware's one-file format (a decimal number), or None."""
    try:
        text = data.decode().strip()
    except Exception:  # noqa: BLE001 (garbage bytes)
        return None
    if not text.isdigit() or int(text) > SEQ_MAX:
        return None
    return int(text)


class FileCounter:
    """Sequence numbers that only grow, across reboots and a corrupt copy (docs/protocol-v2.md).

    Two copies (path.0, path.1) each hold a ceiling C (every seq ever used is below C),
    the step it was written with, and a check. Before using a seq >= C the device writes
    C' = seq + step to copy 0, then to copy 1 (each by temporary file and rename), so the
    copies differ by at most one write, and a write never advances C by more than the step
    recorded in the copies it replaces (a larger jump is first recorded without advancing).
    At boot:
    - both copies intact: resume at the higher ceiling;
    - one intact, the other missing or corrupt: resume at intact ceiling + its step (the lost
      copy may hold the one write more);
    - none exists: a fresh device (or the one-file format of earlier firmware: its value + step);
    - otherwise (nothing intact left): `lost`: take() refuses (counter_lost) rather than guess.
    Whenever the copies are not both intact and equal at boot they are rewritten before use.
    """

    def __init__(self, path, step=1000, start=1):
        self.path = path
        self.step = step
        self.copies = (path + ".0", path + ".1")
        self.lost = False
        self.ceiling = 0
        self.recorded_step = step
        resume = self._load()
        self.next_seq = max(resume, start, 1) if resume is not None else 0

    @staticmethod
    def _read(path):
        """bytes of a file, or None if it does not exist."""
        try:
            os.stat(path)
        except OSError:
            return None
        try:
            with open(path, "rb") as f:
                return f.read(64)
        except OSError:
            return b""  # exists but unreadable: corrupt

    def _load(self):
        raw = [self._read(p) for p in self.copies]
        good = [parse_record(r) for r in raw if r is not None]
        intact = [g for g in good if g is not None]
        if len(intact) == 2:
            ceiling = max(intact[0][0], intact[1][0])
            step = max(intact[0][1], intact[1][1])
            if intact[0] == intact[1] and step >= self.step:
                self.ceiling, self.recorded_step = ceiling, step
                return ceiling
        elif len(intact) == 1:
            ceiling, step = intact[0][0] + intact[0][1], intact[0][1]
        elif raw[0] is None and raw[1] is None:
            legacy = self._read(self.path)
            if legacy is None:
                self.ceiling = 1
                return 1  # fresh: nothing was ever used (the first write comes before seq 1)
            value = _legacy_value(legacy)
            if value is None:
                self.lost = True
                return None
            ceiling, step = value + self.step, self.step
        else:
            self.lost = True
            return None
        # Repair before any use: both copies intact, equal, with the current step recorded.
        self._store(ceiling, max(step, self.step))
        return ceiling

    def _store(self, ceiling, step):
        text = record(ceiling, step)
        for path in self.copies:
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.rename(tmp, path)  # atomic on littlefs and POSIX: old or new, never half
        self.ceiling, self.recorded_step = ceiling, step

    def take(self):
        if self.lost:
            raise V2Error("counter_lost", "no intact copy of the v2 counter: re-key the device")
        seq = self.next_seq
        if seq > SEQ_MAX:
            raise V2Error("seq_exhausted", "sequence numbers used up: the device needs new keys")
        if seq >= self.ceiling:
            advance = seq + self.step - self.ceiling
            if advance > self.recorded_step:
                self._store(self.ceiling, advance)  # record a larger jump before making it
            self._store(seq + self.step, self.step)
        self.next_seq = seq + 1
        return seq
