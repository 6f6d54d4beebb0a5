"""Sealed envelopes for seed workflow 2 (docs/envelope.md), as pure functions.

One envelope carries one message from a sender to one recipient:

- a fresh AES-256 key per message encrypts the payload (AES-256-GCM, 12-byte IV,
  16-byte tag; the clear header is the associated data);
- that key is wrapped with the recipient's RSA public key (RSA-OAEP, SHA-256,
  MGF1-SHA-256);
- the sender signs the whole envelope (RSA-PSS, SHA-256, salt 32 bytes);
- the header names the sender, the recipient and the message kind, and carries
  a random nonce and a timestamp (milliseconds).

Binary framing (all integers big-endian), so a 10 MB payload costs no base64:

    magic      4   b"MSE1"
    ts_ms      8   u64, sender's clock, milliseconds since the epoch
    nonce      16  random
    kind       1+n u8 length + ASCII
    sender     1+n u8 length + ASCII id
    recipient  1+n u8 length + ASCII id
    wrapped    2+n u16 length + RSA-OAEP(key)
    iv         12
    ct_len     4   u32
    ciphertext ct_len
    tag        16
    sig        2+n u16 length + RSA-PSS over every byte before it

`parse` only splits bytes (malformed input raises); `open_envelope` checks
recipient, signature, timestamp and decrypts. Which nonces were seen is state,
kept by `NonceCache`, outside the codec.
"""
from __future__ import annotations

import os
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from Crypto.Cipher import AES, PKCS1_OAEP
from Crypto.Hash import SHA256
from Crypto.PublicKey import RSA
from Crypto.Signature import pss

from services.common.errors import ReasonError

MAGIC = b"MSE1"
NONCE_LEN = 16
IV_LEN = 12
TAG_LEN = 16
KEY_LEN = 32
SALT_LEN = 32
RSA_BITS = 3072
MIN_RSA_BITS = 3072
DEFAULT_WINDOW = 120.0
# Large parameter files (the paper's case) are fine; anything past this is refused before any crypto.
MAX_PAYLOAD = 64 * 1024 * 1024
_ID_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_FIXED = struct.Struct(">4sQ16s")

REASONS = (
    "malformed", "wrong_recipient", "unknown_sender", "bad_signature", "stale", "replay", "undecryptable",
    "nonce_cache_unwritable",  # a holder that keeps its cache on disk could not write it (refused)
)


class EnvelopeError(ReasonError, ValueError):
    """A rejected envelope. `reason` is one of REASONS (a stable code for logs and tests)."""


@dataclass(frozen=True)
class Envelope:
    """A parsed (not yet verified) envelope. `signed` is every byte the signature covers."""

    ts_ms: int
    nonce: bytes
    kind: str
    sender: str
    recipient: str
    wrapped_key: bytes
    iv: bytes
    ciphertext: bytes
    tag: bytes
    signature: bytes
    aad: bytes
    signed: bytes

    @property
    def ts(self) -> float:
        return self.ts_ms / 1000.0


def _short(name: str, value: str) -> bytes:
    raw = value.encode("ascii", "strict") if isinstance(value, str) else b""
    if not 1 <= len(raw) <= 64 or not set(raw) <= _ID_CHARS:
        raise ValueError(f"{name} must be 1-64 characters of [A-Za-z0-9_.-], got {value!r}")
    return bytes([len(raw)]) + raw


def check_key_size(key: RSA.RsaKey, what: str = "key") -> None:
    if key.size_in_bits() < MIN_RSA_BITS:
        raise ValueError(f"{what} is {key.size_in_bits()}-bit RSA; at least {MIN_RSA_BITS} bits required")


def generate_key(bits: int = RSA_BITS) -> RSA.RsaKey:
    return RSA.generate(bits)


def seal(
    payload: bytes,
    *,
    kind: str,
    sender: str,
    recipient: str,
    sender_key: RSA.RsaKey,
    recipient_key: RSA.RsaKey,
    now: float | None = None,
    nonce: bytes | None = None,
    aes_key: bytes | None = None,
    iv: bytes | None = None,
) -> bytes:
    """Seal payload for recipient, signed by sender. nonce/aes_key/iv/now are for test vectors only."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload is {len(payload)} bytes; at most {MAX_PAYLOAD}")
    if not sender_key.has_private():
        raise ValueError("sender_key must be a private key")
    ts_ms = int(round((time.time() if now is None else now) * 1000))
    nonce = os.urandom(NONCE_LEN) if nonce is None else nonce
    aes_key = os.urandom(KEY_LEN) if aes_key is None else aes_key
    iv = os.urandom(IV_LEN) if iv is None else iv
    if len(nonce) != NONCE_LEN or len(aes_key) != KEY_LEN or len(iv) != IV_LEN:
        raise ValueError("nonce, key or iv has the wrong length")
    wrapped = PKCS1_OAEP.new(recipient_key.public_key(), hashAlgo=SHA256).encrypt(aes_key)
    aad = b"".join([
        _FIXED.pack(MAGIC, ts_ms, nonce),
        _short("kind", kind), _short("sender", sender), _short("recipient", recipient),
        struct.pack(">H", len(wrapped)), wrapped, iv,
    ])
    cipher = AES.new(aes_key, AES.MODE_GCM, nonce=iv, mac_len=TAG_LEN)
    cipher.update(aad)
    ciphertext, tag = cipher.encrypt_and_digest(payload)
    signed = b"".join([aad, struct.pack(">I", len(ciphertext)), ciphertext, tag])
    signature = pss.new(sender_key, salt_bytes=SALT_LEN).sign(SHA256.new(signed))
    return b"".join([signed, struct.pack(">H", len(signature)), signature])


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise EnvelopeError("malformed", f"truncated in {what}")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return bytes(chunk)

    def uint(self, fmt: str, what: str) -> int:
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size, what))[0]

    def ident(self, what: str) -> str:
        raw = self.take(self.uint(">B", what), what)
        if not raw or not set(raw) <= _ID_CHARS:
            raise EnvelopeError("malformed", f"{what} is not a valid id")
        return raw.decode("ascii")


def parse(data: bytes, max_payload: int = MAX_PAYLOAD) -> Envelope:
    """Split an envelope into its fields; raises EnvelopeError('malformed') for anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EnvelopeError("malformed", "not bytes")
    data = bytes(data)
    r = _Reader(data)
    magic = r.take(4, "magic")
    if magic != MAGIC:
        raise EnvelopeError("malformed", "not a medsec envelope (bad magic)")
    ts_ms = r.uint(">Q", "timestamp")
    nonce = r.take(NONCE_LEN, "nonce")
    kind = r.ident("kind")
    sender = r.ident("sender")
    recipient = r.ident("recipient")
    wrapped = r.take(r.uint(">H", "wrapped key length"), "wrapped key")
    if not 256 <= len(wrapped) <= 1024:
        raise EnvelopeError("malformed", f"wrapped key of {len(wrapped)} bytes")
    iv = r.take(IV_LEN, "iv")
    aad_end = r.pos
    ct_len = r.uint(">I", "ciphertext length")
    if ct_len > max_payload:
        raise EnvelopeError("malformed", f"payload of {ct_len} bytes is over the limit of {max_payload}")
    ciphertext = r.take(ct_len, "ciphertext")
    tag = r.take(TAG_LEN, "tag")
    signed_end = r.pos
    signature = r.take(r.uint(">H", "signature length"), "signature")
    if r.pos != len(data):
        raise EnvelopeError("malformed", f"{len(data) - r.pos} trailing bytes")
    return Envelope(
        ts_ms=ts_ms, nonce=nonce, kind=kind, sender=sender, recipient=recipient, wrapped_key=wrapped,
        iv=iv, ciphertext=ciphertext, tag=tag, signature=signature,
        aad=data[:aad_end], signed=data[:signed_end],
    )


def verify(env: Envelope, sender_key: RSA.RsaKey) -> None:
    try:
        pss.new(sender_key, salt_bytes=SALT_LEN).verify(SHA256.new(env.signed), env.signature)
    except (ValueError, TypeError):
        raise EnvelopeError("bad_signature", f"signature of {env.sender!r} does not verify") from None


def check_time(env: Envelope, now: float, window: float = DEFAULT_WINDOW) -> None:
    skew = env.ts - now
    if abs(skew) > window:
        raise EnvelopeError("stale", f"timestamp is {skew:+.0f}s from now (window ±{window:.0f}s)")


def decrypt(env: Envelope, recipient_key: RSA.RsaKey) -> bytes:
    try:
        aes_key = PKCS1_OAEP.new(recipient_key, hashAlgo=SHA256).decrypt(env.wrapped_key)
    except (ValueError, TypeError):
        raise EnvelopeError("undecryptable", "wrapped key does not open with this recipient's key") from None
    if len(aes_key) != KEY_LEN:
        raise EnvelopeError("undecryptable", "wrapped key is not an AES-256 key")
    cipher = AES.new(aes_key, AES.MODE_GCM, nonce=env.iv, mac_len=TAG_LEN)
    cipher.update(env.aad)
    try:
        return cipher.decrypt_and_verify(env.ciphertext, env.tag)
    except ValueError:
        raise EnvelopeError("undecryptable", "GCM tag does not verify") from None


def open_envelope(
    env: Envelope,
    *,
    recipient: str,
    recipient_key: RSA.RsaKey,
    sender_key: RSA.RsaKey,
    now: float | None = None,
    window: float = DEFAULT_WINDOW,
) -> bytes:
    """Check recipient, signature and time, then decrypt. No nonce check: see `Opener`."""
    if env.recipient != recipient:
        raise EnvelopeError("wrong_recipient", f"sealed for {env.recipient!r}, not {recipient!r}")
    verify(env, sender_key)
    check_time(env, time.time() if now is None else now, window)
    return decrypt(env, recipient_key)


class NonceCache:
    """Nonces seen per sender, forgotten once their timestamp leaves the window.

    Memory is bounded: at most `per_sender` nonces per sender and `max_senders`
    senders. When a sender's set is full, its oldest nonce is dropped and its
    floor rises to that timestamp: anything not newer than the floor is then
    refused as a replay, so eviction never lets a replay through.
    """

    def __init__(
        self, window: float = DEFAULT_WINDOW, per_sender: int = 4096, max_senders: int = 1024
    ) -> None:
        self.window_ms = int(window * 1000)
        self.per_sender = per_sender
        self.max_senders = max_senders
        self._seen: OrderedDict[str, OrderedDict[bytes, int]] = OrderedDict()
        self._floor: dict[str, int] = {}
        self._floor_all = -1  # every sender: raised when a stored cache could not be read back

    def _expire(self, sender: str, now_ms: int) -> None:
        seen = self._seen.get(sender)
        if seen:
            cutoff = now_ms - self.window_ms
            for nonce in [n for n, ts in seen.items() if ts < cutoff]:
                del seen[nonce]

    def check_and_add(self, sender: str, nonce: bytes, ts_ms: int, now: float) -> None:
        self._expire(sender, int(now * 1000))
        seen = self._seen.get(sender)
        if (seen is not None and nonce in seen) or ts_ms <= max(self._floor.get(sender, -1), self._floor_all):
            raise EnvelopeError("replay", f"nonce from {sender!r} was seen before")
        if seen is None:
            if len(self._seen) >= self.max_senders:
                old_sender, old = self._seen.popitem(last=False)
                # A forgotten sender keeps a floor at its newest timestamp: still no replays.
                self._floor[old_sender] = max([self._floor.get(old_sender, -1), *old.values()])
            seen = self._seen[sender] = OrderedDict()
        self._seen.move_to_end(sender)
        seen[nonce] = ts_ms
        while len(seen) > self.per_sender:
            _, dropped_ts = seen.popitem(last=False)
            self._floor[sender] = max(self._floor.get(sender, -1), dropped_ts)

    def __len__(self) -> int:
        return sum(len(s) for s in self._seen.values())

    # --- a holder that restarts keeps refusing replays (services/dispatch/nonces.py) ---
    def snapshot(self, now: float) -> dict:
        """What must outlive a restart, pruned to the window (JSON-ready)."""
        cutoff = int(now * 1000) - self.window_ms
        return {
            "version": 1,
            "seen": {s: {n.hex(): ts for n, ts in seen.items() if ts >= cutoff}
                     for s, seen in self._seen.items()},
            "floor": {s: ts for s, ts in self._floor.items() if ts >= cutoff},
            "floor_all": self._floor_all if self._floor_all >= cutoff else -1,
        }

    def restore(self, doc: object, now: float) -> None:
        """Load a snapshot; ValueError if it is not one (then nothing is loaded)."""
        if not isinstance(doc, dict) or doc.get("version") != 1:
            raise ValueError("not a nonce cache snapshot")
        cutoff = int(now * 1000) - self.window_ms
        seen: OrderedDict[str, OrderedDict[bytes, int]] = OrderedDict()
        try:
            for sender, nonces in doc["seen"].items():
                kept = sorted((ts, bytes.fromhex(n)) for n, ts in nonces.items() if int(ts) >= cutoff)
                if kept:
                    seen[str(sender)] = OrderedDict((n, int(ts)) for ts, n in kept[-self.per_sender:])
            floor = {str(s): int(ts) for s, ts in doc["floor"].items()}
            floor_all = int(doc["floor_all"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a nonce cache snapshot ({exc})") from None
        while len(seen) > self.max_senders:
            old_sender, old = seen.popitem(last=False)
            floor[old_sender] = max([floor.get(old_sender, -1), *old.values()])
        self._seen, self._floor, self._floor_all = seen, floor, floor_all

    def refuse_before(self, ts_ms: int) -> None:
        """Refuse every envelope stamped at or before ts_ms (what was seen before it is unknown)."""
        self._floor_all = max(self._floor_all, ts_ms)


KeyLookup = Callable[[str], "RSA.RsaKey | None"]


class Opener:
    """The receiving side: parse, check, open, and refuse replays (holds the nonce cache)."""

    def __init__(
        self,
        me: str,
        my_key: RSA.RsaKey,
        sender_keys: KeyLookup,
        window: float = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.time,
        max_payload: int = MAX_PAYLOAD,
        nonces: NonceCache | None = None,
    ) -> None:
        self.me = me
        self.my_key = my_key
        self.sender_keys = sender_keys
        self.window = window
        self.clock = clock
        self.max_payload = max_payload
        self.nonces = NonceCache(window) if nonces is None else nonces

    def open(self, data: bytes) -> tuple[Envelope, bytes]:
        env = parse(data, self.max_payload)
        if env.recipient != self.me:
            raise EnvelopeError("wrong_recipient", f"sealed for {env.recipient!r}, not {self.me!r}")
        key = self.sender_keys(env.sender)
        if key is None:
            raise EnvelopeError("unknown_sender", f"no public key registered for {env.sender!r}")
        verify(env, key)
        now = self.clock()
        check_time(env, now, self.window)
        # Recorded only after the signature verified: forged envelopes cannot fill the cache.
        self.nonces.check_and_add(env.sender, env.nonce, env.ts_ms, now)
        return env, decrypt(env, self.my_key)


def load_public_key(pem: str | bytes) -> RSA.RsaKey:
    """A station's registered key: PEM, RSA, public, at least 3072 bits. ValueError otherwise."""
    try:
        key = RSA.import_key(pem)
    except (ValueError, IndexError, TypeError):
        raise ValueError("not an RSA key in PEM format") from None
    if key.has_private():
        raise ValueError("a private key was given; register the public key only")
    check_key_size(key, "public key")
    return key


def public_pem(key: RSA.RsaKey) -> str:
    return key.public_key().export_key(format="PEM").decode()


def private_pem(key: RSA.RsaKey) -> bytes:
    return key.export_key(format="PEM", pkcs=8)
