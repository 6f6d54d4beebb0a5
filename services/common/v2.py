"""Device protocol v2 (docs/protocol-v2.md), gateway side, as pure functions.

A frame is a small header in the clear (type, version, flags, key id, sequence
number, body length) and a body of AES-128-CCM ciphertext with an 8-byte tag;
the whole header is the associated data. Nothing here does I/O:

- `read(buf)` finds the first frame in a byte buffer: (Frame, consumed), or
  (None, 0) for "need more bytes"; raises V2Error for bytes no device sends,
  as early as the first offending byte allows (an oversize length is refused
  before its body is read).
- `derive_keys(master, kid)` gives the per-direction keys and the common IV.
- `open_data` / `seal_ack` are the gateway's half; `seal_data` / `open_ack` the
  device's half (the simulator and tests use them; the firmware has its own copy
  in firmware/lib/v2codec.py). AES-CCM is services/common/ccm.py with each key's
  cipher built once (4x faster per frame than building pycryptodome's CCM object
  per frame); tests check it against pycryptodome's CCM and RFC 3610.
- `ReplayWindow` is the per-device counter state auth keeps (last accepted
  sequence number and which recent ones were verified and acknowledged).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Literal

from services.common import ccm, v1
from services.common.errors import ReasonError

DATA = 0xC2  # device -> gateway: one reading
ACK = 0xC3  # gateway -> device: the reading with this seq is on the internal bus
VERSION = 2
KID_MIN, KID_MAX = 1, 7  # 7 = nonce length 13 - 6 (OSCORE's bound for an ID in the nonce)
SEQ_BYTES = 5  # OSCORE's maximum Partial IV: 2**40 readings
SEQ_MAX = (1 << (8 * SEQ_BYTES)) - 1
TAG = 8
NONCE = 13
MASTER_KEY = 16
MAX_PLAINTEXT = 256  # a reading is ~125 bytes; twice that leaves room for longer firmware
MAX_BODY = MAX_PLAINTEXT + TAG
_LEN = struct.Struct(">H")

SALT = b"medsec-v2"
INFO_D2G = b"medsec v2 key device->gateway "
INFO_G2D = b"medsec v2 key gateway->device "
INFO_IV = b"medsec v2 common iv "

FrameKind = Literal["data", "ack"]
_KINDS = {DATA: "data", ACK: "ack"}


class V2Error(ReasonError, ValueError):
    """Input no honest device or gateway sends. `reason` is a short stable code for logs and events."""


@dataclass(frozen=True)
class Frame:
    kind: FrameKind
    kid: bytes
    seq: int
    header: bytes  # authenticated as CCM associated data
    body: bytes  # ciphertext || tag

    @property
    def raw(self) -> bytes:
        return self.header + self.body


@dataclass(frozen=True)
class Keys:
    kid: bytes
    d2g: bytes  # device -> gateway (readings)
    g2d: bytes  # gateway -> device (acknowledgements)
    common_iv: bytes
    _ciphers: dict[str, ccm.Ccm] = field(default_factory=dict, init=False, repr=False, compare=False)

    def cipher(self, direction: Literal["d2g", "g2d"]) -> ccm.Ccm:
        """The direction's AES-CCM, built on first use and kept (per device key, not per frame;
        lazily, so 10,000 registered devices cost nothing until they connect)."""
        found = self._ciphers.get(direction)
        if found is None:
            found = self._ciphers[direction] = ccm.Ccm(self.d2g if direction == "d2g" else self.g2d, TAG)
        return found


def is_v2_start(byte: int) -> bool:
    """A v2 frame starts with a frame type byte; neither is a hex digit, so v1 and v2 share a port."""
    return byte in _KINDS


def header_size(kid_len: int) -> int:
    return 4 + kid_len + SEQ_BYTES + _LEN.size


def read(
    buf: bytes | bytearray | memoryview, expect: FrameKind = "data", max_body: int = MAX_BODY
) -> tuple[Frame | None, int]:
    """The first frame in buf and the bytes it used, or (None, 0) when more bytes are needed."""
    view = memoryview(buf)
    n = len(view)
    if n >= 1 and _KINDS.get(view[0]) != expect:
        raise V2Error("bad_type", f"frame type {view[0]:#04x}, expected {expect}")
    if n >= 2 and view[1] != VERSION:
        raise V2Error("bad_version", f"version {view[1]}, expected {VERSION}")
    if n >= 3 and view[2] != 0:
        raise V2Error("bad_flags", f"reserved flags {view[2]:#04x} must be 0")
    if n < 4:
        return None, 0
    kid_len = view[3]
    if not KID_MIN <= kid_len <= KID_MAX:
        raise V2Error("bad_kid_length", f"key id length {kid_len} outside {KID_MIN}..{KID_MAX}")
    hsize = header_size(kid_len)
    if n < hsize:
        return None, 0
    seq = int.from_bytes(view[4 + kid_len:4 + kid_len + SEQ_BYTES], "big")
    if seq == 0:
        raise V2Error("bad_seq", "sequence number 0 is never sent")
    (length,) = _LEN.unpack_from(view, hsize - _LEN.size)
    if expect == "ack":
        if length != TAG:
            raise V2Error("bad_length", f"ack body of {length} bytes, expected {TAG}")
    elif length > max_body:
        raise V2Error("too_long", f"body length {length} exceeds {max_body}")
    elif length <= TAG:
        raise V2Error("too_short", f"body length {length} leaves no reading beside the tag")
    end = hsize + length
    if n < end:
        return None, 0
    kind: FrameKind = "data" if view[0] == DATA else "ack"
    frame = Frame(kind, bytes(view[4:4 + kid_len]), seq, bytes(view[:hsize]), bytes(view[hsize:end]))
    return frame, end


def derive_keys(master: bytes, kid: bytes) -> Keys:
    """HKDF-SHA256 from the device's master key; the key id is bound into every label."""
    if len(master) != MASTER_KEY:
        raise V2Error("bad_key", f"master key must be {MASTER_KEY} bytes")
    if not KID_MIN <= len(kid) <= KID_MAX:
        raise V2Error("bad_kid_length", f"key id must be {KID_MIN}..{KID_MAX} bytes")
    return Keys(
        kid=kid,
        d2g=ccm.hkdf_sha256(master, SALT, INFO_D2G + kid, 16),
        g2d=ccm.hkdf_sha256(master, SALT, INFO_G2D + kid, 16),
        common_iv=ccm.hkdf_sha256(master, SALT, INFO_IV + kid, NONCE),
    )


def nonce(common_iv: bytes, kid: bytes, seq: int) -> bytes:
    """OSCORE's construction (RFC 8613 5.2): len(kid) | kid padded to 7 | seq padded to 5, XOR common IV."""
    piv = bytes([len(kid)]) + bytes(KID_MAX - len(kid)) + kid + seq.to_bytes(SEQ_BYTES, "big")
    return bytes(a ^ b for a, b in zip(piv, common_iv, strict=True))


def build_header(kind: FrameKind, kid: bytes, seq: int, body_len: int) -> bytes:
    if not 1 <= seq <= SEQ_MAX:
        raise V2Error("bad_seq", f"sequence number must be 1..{SEQ_MAX}")
    code = DATA if kind == "data" else ACK
    return bytes([code, VERSION, 0, len(kid)]) + kid + seq.to_bytes(SEQ_BYTES, "big") + _LEN.pack(body_len)


def seal_data(keys: Keys, seq: int, plaintext: bytes) -> bytes:
    """A device's reading frame (simulator and tests; the firmware uses firmware/lib/v2codec.py)."""
    if not 0 < len(plaintext) <= MAX_PLAINTEXT:
        raise V2Error("too_long", f"plaintext must be 1..{MAX_PLAINTEXT} bytes")
    header = build_header("data", keys.kid, seq, len(plaintext) + TAG)
    return header + keys.cipher("d2g").encrypt(nonce(keys.common_iv, keys.kid, seq), header, plaintext)


def open_data(keys: Keys, frame: Frame) -> bytes:
    """Verify and decrypt a reading frame; nothing comes out unless the tag verifies."""
    try:
        n = nonce(keys.common_iv, keys.kid, frame.seq)
        return keys.cipher("d2g").decrypt(n, frame.header, frame.body)
    except ccm.CcmError:
        raise V2Error("bad_tag", "authentication tag does not verify") from None


def seal_ack(keys: Keys, seq: int) -> bytes:
    """The acknowledgement of reading `seq`: header plus a tag under the gateway->device key.

    Deterministic: acknowledging the same seq again gives the same bytes, so a
    re-sent ack reuses its nonce only with identical input and reveals nothing new.
    """
    header = build_header("ack", keys.kid, seq, TAG)
    return header + keys.cipher("g2d").encrypt(nonce(keys.common_iv, keys.kid, seq), header, b"")


def open_ack(keys: Keys, frame: Frame) -> int:
    """The seq an ack frame acknowledges, once its tag verifies under the gateway->device key."""
    if frame.kid != keys.kid:
        raise V2Error("unknown_kid", "ack for another key id")
    try:
        keys.cipher("g2d").decrypt(nonce(keys.common_iv, keys.kid, frame.seq), frame.header, frame.body)
    except ccm.CcmError:
        raise V2Error("bad_tag", "ack tag does not verify") from None
    return frame.seq


def parse_reading(plaintext: bytes) -> dict[str, str]:
    """The reading inside a verified frame: the same JSON text of seven strings as v1."""
    try:
        return v1.parse_plaintext(plaintext)
    except v1.V1Error as exc:
        raise V2Error(exc.reason, exc.detail) from None


Verdict = Literal["new", "redelivery", "duplicate", "old_seq"]


class ReplayWindow:
    """Per-device counter state: the last accepted seq and the fate of the WINDOW before it.

    Bit i of `verified` / `acked` is about seq `last - i`. A frame is
    - "new" when seq > last: decrypt it; `accept(seq)` once its tag verifies;
    - "duplicate" when that seq was verified and acknowledged: ack again, publish nothing;
    - "redelivery" when it was verified but never acknowledged (the bus publish did not
      complete): publish again (the publisher drops duplicates by (device, seq)) and ack;
    - "old_seq" otherwise (at or below last and never verified, or older than the window):
      refused without decryption.
    A device keeps at most WINDOW unacknowledged readings, so its re-sends always fall
    inside the window.
    """

    WINDOW = 64
    _MASK = (1 << WINDOW) - 1

    def __init__(self, last: int = 0, verified: int = 0, acked: int = 0) -> None:
        self.last = last
        self.verified = verified & self._MASK
        self.acked = acked & self.verified

    def classify(self, seq: int) -> Verdict:
        if seq > self.last:
            return "new"
        bit = 1 << (self.last - seq)
        if self.last - seq >= self.WINDOW or not self.verified & bit:
            return "old_seq"
        return "duplicate" if self.acked & bit else "redelivery"

    def accept(self, seq: int) -> None:
        """Record a verified new frame (call only after its tag verified)."""
        if seq <= self.last:
            raise ValueError(f"seq {seq} is not above {self.last}")
        shift = seq - self.last
        if shift >= self.WINDOW:
            self.verified, self.acked = 1, 0
        else:
            self.verified = ((self.verified << shift) | 1) & self._MASK
            self.acked = (self.acked << shift) & self._MASK
        self.last = seq

    def ack(self, seq: int) -> bool:
        """Mark a verified seq acknowledged; False (and no change) for a seq never verified."""
        if seq > self.last or self.last - seq >= self.WINDOW:
            return False
        bit = 1 << (self.last - seq)
        if not self.verified & bit:
            return False
        self.acked |= bit
        return True

    def to_text(self) -> str:
        return f"{self.last}:{self.verified:x}:{self.acked:x}"

    @classmethod
    def from_text(cls, text: str | None) -> ReplayWindow:
        if not text:
            return cls()
        last, verified, acked = text.split(":")
        return cls(int(last), int(verified, 16), int(acked, 16))
