"""Device protocol v2 (docs/protocol-v2.md), gateway side, as pure functions.

A frame is a small header in the clear (type, version, flags, key id, sequence
number, body length) and a body of AES-128-CCM ciphertext with an 8-byte tag;
the whole header is the associated data. The layout, key derivation and nonce
are services/common/v2device.py, the one file the firmware and the simulator
use too; this module is the gateway's half. Nothing here does I/O:

- `read(buf)` finds the first frame in a byte buffer: (Frame, consumed), or
  (None, 0) for "need more bytes"; raises V2Error for bytes no device sends,
  as early as the first offending byte allows (an oversize length is refused
  before its body is read).
- `derive_keys(master, kid)` gives the per-direction keys and the common IV,
  with each key's AES-CCM built once per device key (OpenSSL's: `OpenSslCcm`; devices
  run the shared pure services/common/ccm.py, and the vectors hold both to the same bytes).
- `open_data` verifies a reading; `seal_ack` and `seal_refusal` build the
  gateway's two answers.
- `ReplayWindow` is the per-device counter state auth keeps (last accepted
  sequence number and which recent ones were verified and acknowledged).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from services.common import ccm, v1
from services.common import v2device as layout
from services.common.errors import ReasonError

DATA = layout.DATA
ACK = layout.ACK
REFUSAL = layout.REFUSAL
VERSION = layout.VERSION
KID_MIN, KID_MAX = layout.KID_MIN, layout.KID_MAX
SEQ_BYTES = layout.SEQ_BYTES
SEQ_MAX = layout.SEQ_MAX
TAG = layout.TAG
NONCE = layout.NONCE
MASTER_KEY = layout.MASTER_KEY
MAX_PLAINTEXT = layout.MAX_PLAINTEXT
MAX_BODY = layout.MAX_BODY
REASON_CODES = layout.REASON_CODES
header_size = layout.header_size

FrameKind = Literal["data", "ack", "refusal"]
_KINDS: dict[int, FrameKind] = {DATA: "data", ACK: "ack", REFUSAL: "refusal"}
_CODES = {name: code for code, name in _KINDS.items()}


class V2Error(ReasonError, ValueError):
    """Input no honest device or gateway sends. `reason` is a short stable code for logs and events."""


class Frame(NamedTuple):  # not a frozen dataclass: built per frame, in a third of the time
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
    g2d: bytes  # gateway -> device (acknowledgements and refusals)
    common_iv: bytes
    _ciphers: dict[str, OpenSslCcm] = field(default_factory=dict, init=False, repr=False, compare=False)
    # A reading's and an ack's nonce is this XOR seq (the seq fills the nonce's last 5 bytes, where
    # the key id part has zeros): computed once per key, not per frame.
    _nonce_base: int = field(init=False, repr=False, compare=False)
    _ack_head: bytes = field(init=False, repr=False, compare=False)  # an ack header before its seq

    def __post_init__(self) -> None:
        base = int.from_bytes(layout.nonce(self.common_iv, self.kid, 0), "big")
        object.__setattr__(self, "_nonce_base", base)
        head = layout.header(ACK, self.kid, 1, layout.ACK_BODY)[:4 + len(self.kid)]
        object.__setattr__(self, "_ack_head", head)

    def nonce(self, seq: int) -> bytes:
        """The nonce of reading `seq` and of its ack (v2device.nonce with kind DATA), seq in 1..SEQ_MAX."""
        return (self._nonce_base ^ seq).to_bytes(NONCE, "big")

    def ack_header(self, seq: int) -> bytes:
        """The header of the ack of reading `seq` (v2device.header for ACK), seq in 1..SEQ_MAX."""
        return self._ack_head + seq.to_bytes(SEQ_BYTES, "big") + _ANSWER_LENGTH["ack"]

    def cipher(self, direction: Literal["d2g", "g2d"]) -> OpenSslCcm:
        """The direction's AES-CCM, built on first use and kept (per device key, not per frame;
        lazily, so 10,000 registered devices cost nothing until they connect)."""
        found = self._ciphers.get(direction)
        if found is None:
            found = self._ciphers[direction] = OpenSslCcm(self.d2g if direction == "d2g" else self.g2d)
        return found


class OpenSslCcm:
    """The gateway's AES-CCM: OpenSSL's (the cryptography package), with the interface of the
    shared pure implementation (services/common/ccm.py) that devices run. The same bytes (the
    vectors check both); ~1 us a frame instead of ~15 (issue 13)."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESCCM(key, tag_length=TAG)

    def encrypt(self, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        return self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, nonce: bytes, aad: bytes, data: bytes) -> bytes:
        try:
            return self._aead.decrypt(nonce, data, aad)
        except InvalidTag:
            raise ccm.CcmError("bad_tag", "authentication tag does not verify") from None


def is_v2_start(byte: int) -> bool:
    """A v2 frame starts with a frame type byte; none is a hex digit, so v1 and v2 share a port
    (an answer's type sent to the gateway is then refused as bad_type)."""
    return byte in _KINDS


# A data frame's header after its first four bytes, by key id length (the fourth byte): key id,
# seq (high byte, low four bytes), body length. None for a length no frame has.
_DATA_HEADS = [struct.Struct(f">4x{n}sBIH") if KID_MIN <= n <= KID_MAX else None for n in range(256)]


def read(
    buf: bytes | bytearray | memoryview, expect: FrameKind = "data", max_body: int = MAX_BODY
) -> tuple[Frame | None, int]:
    """The first frame in buf and the bytes it used, or (None, 0) when more bytes are needed."""
    n = len(buf)
    if expect == "data" and n >= 4 and buf[0] == DATA and buf[1] == VERSION and buf[2] == 0:
        # A whole, well-formed reading frame, the common case: one struct unpack (0.9 us instead of
        # 1.7, in the proxy and again in auth, issue 13). Anything else is _read's to judge.
        head = _DATA_HEADS[buf[3]]
        if head is not None and n >= head.size:
            kid, seq_high, seq_low, length = head.unpack_from(buf)
            size = head.size
            end = size + length
            if TAG < length <= max_body and (seq_high or seq_low) and n >= end:
                whole = bytes(buf[:end])
                return Frame("data", kid, seq_high << 32 | seq_low, whole[:size], whole[size:]), end
    return _read(buf, expect, max_body)


def _read(
    buf: bytes | bytearray | memoryview, expect: FrameKind, max_body: int
) -> tuple[Frame | None, int]:
    """`read` for any bytes: the shared layout's checks (v2device.parse_header), error by error."""
    view = memoryview(buf)
    try:
        head = layout.parse_header(view, (_CODES[expect],), max_body)
    except layout.V2Error as exc:
        raise V2Error(exc.reason, exc.detail) from None
    if head is None:
        return None, 0
    code, kid_len, seq, hsize, length = head
    end = hsize + length
    if len(view) < end:
        return None, 0
    frame = Frame(_KINDS[code], bytes(view[4:4 + kid_len]), seq, bytes(view[:hsize]), bytes(view[hsize:end]))
    return frame, end


_ANSWER_BODY = {"ack": layout.ACK_BODY, "refusal": layout.REFUSAL_BODY}
_ANSWER_LENGTH = {kind: body.to_bytes(2, "big") for kind, body in _ANSWER_BODY.items()}  # as headers carry it


def answer_header(frame: Frame, kind: Literal["ack", "refusal"]) -> bytes:
    """The header the gateway's answer of `kind` to a reading frame carries: the frame's key id and
    seq under the answer's type and body length (an answer is that header and its body)."""
    return bytes([_CODES[kind]]) + frame.header[1:-2] + _ANSWER_LENGTH[kind]


def is_answer_to(data: bytes, frame: Frame, kind: Literal["ack", "refusal"]) -> bool:
    """Whether `data` is exactly one answer of `kind` to `frame` (its tag is the device's to check)."""
    header = answer_header(frame, kind)
    return len(data) == len(header) + _ANSWER_BODY[kind] and data.startswith(header)


def derive_keys(master: bytes, kid: bytes) -> Keys:
    """HKDF-SHA256 from the device's master key; the key id is bound into every label."""
    try:
        d2g, g2d, common_iv = layout.derive(master, kid)
    except layout.V2Error as exc:
        raise V2Error(exc.reason, exc.detail) from None
    return Keys(kid=kid, d2g=d2g, g2d=g2d, common_iv=common_iv)


def nonce(common_iv: bytes, kid: bytes, seq: int, kind: FrameKind = "data") -> bytes:
    """OSCORE's construction (RFC 8613 5.2); a refusal's nonce has its own space (v2device.nonce)."""
    return layout.nonce(common_iv, kid, seq, _CODES[kind])


def build_header(kind: FrameKind, kid: bytes, seq: int, body_len: int) -> bytes:
    try:
        return layout.header(_CODES[kind], kid, seq, body_len)
    except layout.V2Error as exc:
        raise V2Error(exc.reason, exc.detail) from None


def open_data(keys: Keys, frame: Frame) -> bytes:
    """Verify and decrypt a reading frame; nothing comes out unless the tag verifies."""
    try:
        return keys.cipher("d2g").decrypt(keys.nonce(frame.seq), frame.header, frame.body)
    except ccm.CcmError:
        raise V2Error("bad_tag", "authentication tag does not verify") from None


def seal_ack(keys: Keys, seq: int) -> bytes:
    """The acknowledgement of reading `seq`: header plus a tag under the gateway->device key.

    Deterministic: acknowledging the same seq again gives the same bytes, so a
    re-sent ack reuses its nonce only with identical input and reveals nothing new.
    """
    if not 1 <= seq <= SEQ_MAX:
        raise V2Error("bad_seq", "sequence number must be 1..2**40-1")
    header = keys.ack_header(seq)
    return header + keys.cipher("g2d").encrypt(keys.nonce(seq), header, b"")


def seal_refusal(keys: Keys, seq: int, reason: str) -> bytes:
    """The refusal of verified reading `seq` for `reason` (one code byte), under the ack's key.

    Its nonce has bit 7 of its first byte set (layout.REFUSAL_NONCE), which no ack or reading
    nonce has, and it is deterministic like an ack: a reading refused again gets the same bytes.
    """
    header = build_header("refusal", keys.kid, seq, layout.REFUSAL_BODY)
    code = bytes([layout.reason_code(reason)])
    n = layout.nonce(keys.common_iv, keys.kid, seq, REFUSAL)
    return header + keys.cipher("g2d").encrypt(n, header, code)


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
    - "new" when seq > last, or when it is inside the window and was never verified (a reading
      that arrives late, after later ones: refused once by a store outage, or overtaken on
      another connection): decrypt it; `accept(seq)` once its tag verifies. Each seq is accepted
      once, in any order inside the window, as IPsec and DTLS do (RFC 4303 section 3.4.3);
    - "duplicate" when that seq was verified and acknowledged: ack again, publish nothing;
    - "redelivery" when it was verified but never acknowledged (the bus publish did not
      complete): publish again (the publisher drops duplicates by (device, seq)) and ack;
    - "old_seq" when it is older than the window: refused without decryption.
    A device keeps at most WINDOW unacknowledged readings, so its re-sends always fall
    inside the window, and none of them can be refused for good.
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
        if self.last - seq >= self.WINDOW:
            return "old_seq"
        bit = 1 << (self.last - seq)
        if not self.verified & bit:
            return "new"
        return "duplicate" if self.acked & bit else "redelivery"

    def accept(self, seq: int) -> None:
        """Record a verified new frame (call only after its tag verified)."""
        if self.classify(seq) != "new":
            raise ValueError(f"seq {seq} is not new to the window (last {self.last})")
        if seq <= self.last:
            self.verified |= 1 << (self.last - seq)
            return
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

    def ack_all(self, seqs: list[int]) -> list[int]:
        """`ack` for each of `seqs` (the proxy's acks of a bus message, ~13 seqs: one pass, not a
        call each); the seqs it could not mark because they were never verified. A seq older than
        the window is neither: there is no bit left to record."""
        last, verified, acked = self.last, self.verified, self.acked
        never = []
        for seq in seqs:
            age = last - seq
            if age >= self.WINDOW:
                continue
            if age < 0 or not verified >> age & 1:
                never.append(seq)
            else:
                acked |= 1 << age
        self.acked = acked
        return never

    def to_text(self) -> str:
        return f"{self.last}:{self.verified:x}:{self.acked:x}"

    @classmethod
    def from_text(cls, text: str | None) -> ReplayWindow:
        if not text:
            return cls()
        last, verified, acked = text.split(":")
        return cls(int(last), int(verified, 16), int(acked, 16))
