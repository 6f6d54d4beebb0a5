"""The proxy <-> auth socket protocol, as pure functions.

Each message is a 4-byte big-endian length and a UTF-8 JSON object. Requests
carry an "id" echoed by the answer, so a proxy can pipeline many requests on
one connection; auth answers in order.

Requests (proxy -> auth):
  {"id", "op": "v1", "conn", "src", "blocks": hex of the ciphertext, "final": bool}
  {"id", "op": "close", "conn"}
Answers (auth -> proxy):
  {"id", "status": "ok", "device", "values": {field: string}, "variant"}
  {"id", "status": "more"}        the last block is not a final block yet
  {"id", "status": "rejected", "reason", "detail", "device": id or null}
"""
from __future__ import annotations

import binascii
import struct
from collections.abc import Iterator
from typing import Any

from services.common import fastjson

MAX_MESSAGE = 1 << 20
_LEN = struct.Struct(">I")


class AuthWireError(ValueError):
    pass


def encode(message: dict[str, Any]) -> bytes:
    body = fastjson.dumps(message)
    if len(body) > MAX_MESSAGE:
        raise AuthWireError(f"message of {len(body)} bytes exceeds {MAX_MESSAGE}")
    return _LEN.pack(len(body)) + body


def decode(buf: bytes | bytearray) -> tuple[dict[str, Any] | None, int]:
    """Return (message, bytes consumed), or (None, 0) when more bytes are needed."""
    if len(buf) < _LEN.size:
        return None, 0
    (length,) = _LEN.unpack_from(buf)
    if length > MAX_MESSAGE:
        raise AuthWireError(f"message length {length} exceeds {MAX_MESSAGE}")
    end = _LEN.size + length
    if len(buf) < end:
        return None, 0
    try:
        message = fastjson.loads(bytes(buf[_LEN.size:end]))
    except ValueError as exc:
        raise AuthWireError(f"message is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise AuthWireError("message is not a JSON object")
    return message, end


def b64_text(data: bytes) -> str:
    """A field of bytes (v2 frames, acks, refusals) as the base64 text the messages carry."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def b64_bytes(text: str) -> bytes | None:
    """A base64 field's bytes, or None if it is not strict base64 (what b64decode(validate=True)
    refuses, without its regex pass first)."""
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except ValueError:  # binascii.Error is one
        return None


def messages(buf: bytearray) -> Iterator[dict[str, Any]]:
    """Each complete message at the front of buf, taken out of buf as it is yielded (a caller
    that stops early leaves the rest in place); ends when more bytes are needed."""
    while True:
        message, used = decode(buf)
        if message is None:
            return
        del buf[:used]
        yield message
