"""Legacy device protocol v1 (docs/protocols.md), as pure functions.

Wire: each 16-byte AES-128-CBC block as 32 hex characters, blocks joined by
'+', readings written back to back with no delimiter. Nothing names the
device, and a reading's end is only certain once its last block decrypts to
text ending in '&' (the padding), so framing is split in two:

- `scan(buf)` finds the blocks of the first reading in a byte buffer; it never
  decrypts. It says whether the reading is certainly over (a byte other than
  '+' follows) or only possibly over (the buffer ends right after a block).
- `decrypt(...)` / `parse_plaintext(...)` turn blocks into a reading, given a
  key; the auth service alone calls them.
"""
from __future__ import annotations

import binascii
import re
from typing import Literal, NamedTuple, Protocol

from services.common import fastjson
from services.common.errors import ReasonError

BLOCK = 16
BLOCK_HEX = 32
SEPARATOR = ord("+")
PAD = ord("&")
FIELDS = ("Temp", "TempMcu", "PulseSig", "Acel_x", "Acel_y", "Acel_z", "TempMpu")
FIELD_SET = frozenset(FIELDS)  # for checking a reading's keys at once
FIRST_BLOCK_PREFIX = b'{"Temp":"'
VARIANTS = ("chained", "per_block")
Variant = Literal["chained", "per_block"]

_HEX_BYTES = b"0123456789abcdefABCDEF"
_HEX = frozenset(_HEX_BYTES)
_RUN = re.compile(rb"(?:[0-9a-fA-F]{%d}\+)*[0-9a-fA-F]{%d}" % (BLOCK_HEX, BLOCK_HEX))


class V1Error(ReasonError, ValueError):
    """Malformed v1 input. `reason` is a short stable code for logs and events."""


class Scan(NamedTuple):  # not a frozen dataclass: built per reading, in a third of the time
    """The blocks of the first reading in a buffer.

    `hex` is their text as sent, in lower case, without the '+' between them (what the proxy
    hands to auth, which decrypts: the proxy never needs the bytes). `final` is True when a
    non-'+' byte follows the last block (the reading is certainly over); False when the buffer
    ends right after it (it is over only if the last block decrypts to padding). `consumed`
    counts the bytes of the reading, not the byte that follows it.
    """

    hex: bytes
    consumed: int
    final: bool

    @property
    def blocks(self) -> tuple[bytes, ...]:
        raw = binascii.unhexlify(self.hex)
        return tuple(raw[i:i + BLOCK] for i in range(0, len(raw), BLOCK))


def is_v1_start(byte: int) -> bool:
    """A v1 stream starts with a hex digit; v2 frames start with a byte that is not one."""
    return byte in _HEX


def scan(buf: bytes | bytearray | memoryview, max_blocks: int = 64) -> Scan | None:
    """Find the first reading's blocks. None means "need more bytes".

    Raises V1Error for input no v1 device sends: a non-hex character inside a
    block, a block not followed by '+' or a new block, a reading longer than
    max_blocks.
    """
    # One regular-expression pass in C finds a well-formed run of blocks (issue 13: the loop
    # below, a slice and a check per block, was a tenth of the proxy's CPU). Whatever it cannot
    # settle (a '+' after the run: more bytes to come, or an error) goes to the loop.
    found = _RUN.match(buf)
    if found is not None:
        end, n = found.end(), len(buf)
        count = (end + 1) // (BLOCK_HEX + 1)
        if count <= max_blocks and (end == n or buf[end] != SEPARATOR):
            return Scan(bytes(buf[:end]).replace(b"+", b"").lower(), end, final=end < n)
    return _scan_block_by_block(buf, max_blocks)


def _scan_block_by_block(buf: bytes | bytearray | memoryview, max_blocks: int) -> Scan | None:
    """scan(), one block at a time: the reference, and what locates an error."""
    view = memoryview(buf)
    blocks: list[bytes] = []
    pos = 0
    n = len(view)
    while True:
        end = pos + BLOCK_HEX
        chunk = bytes(view[pos:min(end, n)])
        # translate() checks the whole block in C; the slow scan only runs to locate an error.
        if chunk.translate(None, _HEX_BYTES):
            bad = next(i for i, ch in enumerate(chunk) if ch not in _HEX)
            if chunk[bad] == SEPARATOR and bad == 0 and blocks:
                raise V1Error("bad_separator", "two '+' in a row")
            reason = "bad_block_length" if chunk[bad] == SEPARATOR else "not_hex"
            raise V1Error(reason, f"byte {chunk[bad]:#04x} at offset {pos + bad} inside a block")
        if end > n:
            return None
        blocks.append(binascii.unhexlify(chunk))
        if len(blocks) > max_blocks:
            raise V1Error("too_long", f"reading longer than {max_blocks} blocks")
        if end == n:
            return Scan(binascii.hexlify(b"".join(blocks)), end, final=False)
        if view[end] != SEPARATOR:
            return Scan(binascii.hexlify(b"".join(blocks)), end, final=True)
        pos = end + 1


class BlockCipher(Protocol):
    """What decrypt() needs: an AES-ECB object (pycryptodome's, or cryptolib's on a device)."""

    def decrypt(self, data: bytes) -> bytes: ...


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def first_block_matches(ecb: BlockCipher, iv: bytes, block0: bytes) -> bool:
    """The one-block identification test: both variants decrypt block 0 the same way."""
    return _xor(ecb.decrypt(block0), iv).startswith(FIRST_BLOCK_PREFIX)


def decrypt(ecb: BlockCipher, iv: bytes, blocks: tuple[bytes, ...], variant: Variant) -> bytes:
    """Decrypt a reading's blocks (padding included) with one ECB call."""
    raw = ecb.decrypt(b"".join(blocks))
    if variant == "chained":
        chain = iv + b"".join(blocks[:-1])
    else:
        chain = iv * len(blocks)
    return _xor(raw, chain)


def ends_with_padding(plain: bytes) -> bool:
    return bool(plain) and plain[-1] == PAD


def strip_padding(plain: bytes) -> bytes:
    """Remove the '&' padding of the final block (1 to 16 of them)."""
    if not ends_with_padding(plain):
        raise V1Error("bad_padding", "final block does not end with '&' padding")
    text = plain.rstrip(b"&")
    if len(plain) - len(text) > BLOCK:
        raise V1Error("bad_padding", "more than one block of '&' padding")
    return text


_ONLY_STR = {str}


def parse_plaintext(text: bytes) -> dict[str, str]:
    """The reading as the device sent it: seven fields, every value a string."""
    try:
        obj = fastjson.loads(text)
    except ValueError:  # invalid UTF-8 included
        raise V1Error("not_json", "plaintext is not JSON (wrong key or corrupted reading)") from None
    if not isinstance(obj, dict):
        raise V1Error("not_json", "plaintext is not a JSON object")
    # Every reading passes here (auth, v1 and v2): one check of the keys and one of the types for
    # a good one (half the time, issue 13); the field by field search only names what is wrong.
    if obj.keys() == FIELD_SET and set(map(type, obj.values())) == _ONLY_STR:
        return obj
    missing = [f for f in FIELDS if f not in obj]
    if missing:
        raise V1Error("missing_field", f"reading lacks {', '.join(missing)}")
    extra = [k for k in obj if k not in FIELDS]
    if extra:
        raise V1Error("unknown_field", f"reading has unexpected fields {', '.join(sorted(extra))[:80]}")
    not_str = [f for f in FIELDS if not isinstance(obj[f], str)]
    if not_str:
        raise V1Error("not_string", f"{', '.join(not_str)} must be strings")
    return {f: obj[f] for f in FIELDS}


def decode_reading(
    ecb: BlockCipher, iv: bytes, blocks: tuple[bytes, ...], variant: Variant
) -> dict[str, str]:
    return parse_plaintext(strip_padding(decrypt(ecb, iv, blocks, variant)))


def detect_variant(ecb: BlockCipher, iv: bytes, blocks: tuple[bytes, ...]) -> Variant:
    """Pick the variant under which a complete reading decodes; chained first (the firmware's)."""
    for variant in VARIANTS:
        try:
            decode_reading(ecb, iv, blocks, variant)  # type: ignore[arg-type]
            return variant  # type: ignore[return-value]
        except V1Error:
            continue
    return "chained"


# --- encoding: what a device does (simulator, tests) ---

def pad(plaintext: bytes) -> bytes:
    return plaintext + b"&" * (BLOCK - len(plaintext) % BLOCK)


def encrypt(ecb_encrypt, iv: bytes, plaintext: bytes, variant: Variant) -> bytes:
    """Encrypt and hex-encode one reading as a device writes it to TCP.

    `ecb_encrypt` encrypts exactly one 16-byte block.
    """
    data = pad(plaintext)
    prev = iv
    out = []
    for i in range(0, len(data), BLOCK):
        block = ecb_encrypt(_xor(data[i:i + BLOCK], prev))
        out.append(binascii.hexlify(block))
        prev = block if variant == "chained" else iv
    return b"+".join(out)


def format_reading(values: dict[str, float]) -> bytes:
    """Build the reading text exactly as the firmware prints it (3 decimals, 2 for negative g)."""
    parts = []
    for name in FIELDS:
        v = values[name]
        decimals = 2 if name.startswith("Acel_") and v < 0 else 3
        parts.append(f'"{name}":"{v:.{decimals}f}"')
    return ("{" + ",".join(parts) + "}").encode()
