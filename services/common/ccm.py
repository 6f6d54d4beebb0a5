"""AES-128-CCM (RFC 3610) and HKDF-SHA256 (RFC 5869) from an AES block cipher and SHA-256 only.

Why this exists: MicroPython on the RP2040 offers `cryptolib.aes` in ECB (mode 1) and
CBC (mode 2) and `hashlib.sha256`, but no CTR, CCM or `hmac`. CCM is CTR + CBC-MAC,
so it is built here from exactly those two modes, and HMAC is written out by hand.
The gateway uses pycryptodome's own CCM (services/common/v2.py); tests show both agree
on RFC 3610's vectors and on each other's frames.

This file runs unchanged on CPython and on MicroPython (copy it to the device as
/lib/ccm.py): no dataclasses, no f-strings, no keyword arguments to int methods,
no bytes-to-hex method, no typing imports, annotations use builtin names only.

API (everything is bytes in, bytes out; no I/O):
    encrypt(key, nonce, aad, plaintext, tag_len=8) -> ciphertext || tag
    decrypt(key, nonce, aad, data, tag_len=8) -> plaintext   (raises CcmError)
    Ccm(key, tag_len=8).encrypt(nonce, aad, plaintext) / .decrypt(nonce, aad, data)
                                        the same with the key's ECB object built once
    hkdf_sha256(ikm, salt, info, length) -> okm
    hmac_sha256(key, msg) -> 32-byte MAC
"""
import hashlib

try:  # MicroPython
    from cryptolib import aes as _mp_aes

    def _ecb(key):
        return _mp_aes(key, 1)

    def _cbc(key):
        return _mp_aes(key, 2, bytes(16))

except ImportError:  # CPython: pycryptodome gives the same two primitives
    from Crypto.Cipher import AES as _AES

    def _ecb(key):
        return _AES.new(key, _AES.MODE_ECB)

    def _cbc(key):
        return _AES.new(key, _AES.MODE_CBC, iv=bytes(16))


BLOCK = 16
_ZERO_BLOCK = bytes(16)


class CcmError(ValueError):
    """Bad parameters, or a tag that does not verify (`reason` is "bad_tag" then)."""

    def __init__(self, reason, detail):
        super().__init__(reason + ": " + detail)
        self.reason = reason
        self.detail = detail


def _xor(a, b):
    """XOR two byte strings of the same length (big ints: fast on both Pythons)."""
    n = len(a)
    if n == 0:
        return b""
    return (int.from_bytes(a, "big") ^ int.from_bytes(b[:n], "big")).to_bytes(n, "big")


def _pad16(data):
    rest = len(data) % BLOCK
    if rest:
        return data + bytes(BLOCK - rest)
    return data


def _check(key, nonce, tag_len):
    if len(key) not in (16, 24, 32):
        raise CcmError("bad_key", "AES key must be 16, 24 or 32 bytes")
    if not 7 <= len(nonce) <= 13:
        raise CcmError("bad_nonce", "CCM nonce must be 7 to 13 bytes")
    if tag_len not in (4, 6, 8, 10, 12, 14, 16):
        raise CcmError("bad_tag_length", "CCM tag length must be even, 4 to 16")


def _mac_input(nonce, aad, plaintext, tag_len):
    """B0 || encoded aad || plaintext, zero-padded: what CBC-MAC runs over (RFC 3610 section 2.2)."""
    q = 15 - len(nonce)  # L: bytes of the length field
    if len(plaintext) >= (1 << (8 * q)):
        raise CcmError("too_long", "message too long for this nonce size")
    flags = (64 if aad else 0) | (((tag_len - 2) // 2) << 3) | (q - 1)
    b0 = bytes([flags]) + nonce + len(plaintext).to_bytes(q, "big")
    if aad:
        la = len(aad)
        if la < 0xFF00:
            head = la.to_bytes(2, "big")
        else:
            head = b"\xff\xfe" + la.to_bytes(4, "big")
        return b0 + _pad16(head + aad) + _pad16(plaintext)
    return b0 + _pad16(plaintext)


def _keystream(ecb, nonce, nblocks):
    """S_0 .. S_nblocks: ECB of the counter blocks A_i (RFC 3610 section 2.3), one ECB call."""
    q = 15 - len(nonce)
    prefix = bytes([q - 1]) + nonce
    counters = b"".join(prefix + i.to_bytes(q, "big") for i in range(nblocks + 1))
    return ecb.encrypt(counters)


class Ccm:
    """One key's AES-CCM, with its ECB object built once (the gateway keeps one per device key)."""

    def __init__(self, key, tag_len=8):
        _check(key, bytes(13), tag_len)
        self.key = key
        self.tag_len = tag_len
        self._ecb = _ecb(key)
        # One CBC object for every MAC: it chains from its last output block, so XORing that
        # block into the next message's first block gives the zero-IV CBC-MAC without a new object.
        self._cbc = _cbc(key)
        self._chain = _ZERO_BLOCK

    def _mac(self, nonce, aad, plaintext):
        """CBC-MAC, one CBC call."""
        data = _mac_input(nonce, aad, plaintext, self.tag_len)
        out = self._cbc.encrypt(_xor(data[:BLOCK], self._chain) + data[BLOCK:])
        self._chain = out[-BLOCK:]
        return self._chain[:self.tag_len]

    def encrypt(self, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        """Ciphertext followed by the tag."""
        _check(self.key, nonce, self.tag_len)
        tag = self._mac(nonce, aad, plaintext)
        stream = _keystream(self._ecb, nonce, (len(plaintext) + BLOCK - 1) // BLOCK)
        return _xor(plaintext, stream[BLOCK:]) + _xor(tag, stream[:self.tag_len])

    def decrypt(self, nonce: bytes, aad: bytes, data: bytes) -> bytes:
        """Verify and decrypt ciphertext || tag; raises CcmError("bad_tag") and returns nothing on failure."""
        _check(self.key, nonce, self.tag_len)
        n = self.tag_len
        if len(data) < n:
            raise CcmError("bad_tag", "data shorter than the tag")
        body = data[:len(data) - n]
        stream = _keystream(self._ecb, nonce, (len(body) + BLOCK - 1) // BLOCK)
        plaintext = _xor(body, stream[BLOCK:])
        expected = _xor(self._mac(nonce, aad, plaintext), stream[:n])
        if not equal(expected, data[len(data) - n:]):
            raise CcmError("bad_tag", "authentication tag does not verify")
        return plaintext


def encrypt(key: bytes, nonce: bytes, aad: bytes, plaintext: bytes, tag_len: int = 8) -> bytes:
    """AES-CCM: ciphertext followed by the tag."""
    _check(key, nonce, tag_len)
    return Ccm(key, tag_len).encrypt(nonce, aad, plaintext)


def decrypt(key: bytes, nonce: bytes, aad: bytes, data: bytes, tag_len: int = 8) -> bytes:
    """Verify and decrypt ciphertext || tag; raises CcmError("bad_tag") and returns nothing on failure."""
    _check(key, nonce, tag_len)
    return Ccm(key, tag_len).decrypt(nonce, aad, data)


def equal(a: bytes, b: bytes) -> bool:
    """Compare without an early exit (the time does not tell how many bytes matched)."""
    if len(a) != len(b):
        return False
    diff = 0
    for x, y in zip(a, b):  # noqa: B905 (MicroPython's zip takes no strict flag)
        diff |= x ^ y
    return diff == 0


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    """HMAC (RFC 2104) with SHA-256, written out: MicroPython has no hmac module with SHA-256."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + bytes(64 - len(key))
    inner = hashlib.sha256(bytes(k ^ 0x36 for k in key))
    inner.update(msg)
    outer = hashlib.sha256(bytes(k ^ 0x5C for k in key))
    outer.update(inner.digest())
    return outer.digest()


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF (RFC 5869): extract then expand to `length` bytes (at most 255 * 32)."""
    if length > 255 * 32:
        raise CcmError("too_long", "HKDF output at most 8160 bytes")
    prk = hmac_sha256(salt if salt else bytes(32), ikm)
    out = b""
    block = b""
    i = 1
    while len(out) < length:
        block = hmac_sha256(prk, block + info + bytes([i]))
        out += block
        i += 1
    return out[:length]
