"""Simulated devices, one class per protocol: readings in, wire bytes out.

Each protocol is a `SimDevice` subclass (V1Device here, V2Device in v2.py), chosen by
services/sim/protocols.py. The runner only calls:

- `greeting()`: bytes to write right after connecting (a v2 handshake; v1: none);
- `encode(values)`: one reading as it goes on the wire;
- `on_data(data)`: bytes the gateway sent; returns how many readings that acknowledged;
- `unacked()`: frames to send again after a reconnect (v1: none, nothing is acknowledged).
"""
from __future__ import annotations

import binascii
from dataclasses import dataclass, field

from Crypto.Cipher import AES

from services.common import v1


@dataclass(frozen=True)
class Credentials:
    """What the key-admin API returned when the device was registered (secrets included)."""

    id: str
    protocol: str
    secrets: dict[str, str] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, str]:
        return {**self.secrets, "id": self.id, "protocol": self.protocol}

    @classmethod
    def from_json(cls, obj: dict) -> Credentials:
        secrets = {k: str(v) for k, v in obj.items() if k not in ("id", "protocol")}
        return cls(id=str(obj["id"]), protocol=str(obj["protocol"]), secrets=secrets)


class SimDevice:
    """Base class: a protocol's simulated device. Subclasses override encode (and acks if any)."""

    protocol = ""
    acknowledged = False  # does the gateway acknowledge readings of this protocol?
    answered = False  # a verified answer came on the current connection (protocols that answer)

    def __init__(self, creds: Credentials, variant: str = "chained") -> None:
        self.creds = creds
        self.id = creds.id
        self.variant = variant

    def greeting(self) -> bytes:
        return b""

    def encode(self, values: dict[str, float]) -> bytes:
        raise NotImplementedError

    def on_data(self, data: bytes) -> int:
        return 0

    def unacked(self) -> list[bytes]:
        return []

    def stalled(self, now: float, timeout: float) -> bool:
        """Readings wait for an answer and the connection showed no sign of life for `timeout` s."""
        return False


class V1Device(SimDevice):
    """The legacy protocol: AES-128-CBC with the device's static key and IV, hex blocks joined by '+'."""

    protocol = "v1"

    def __init__(self, creds: Credentials, variant: str = "chained") -> None:
        super().__init__(creds, variant)
        if variant not in v1.VARIANTS:
            raise ValueError(f"v1 variant must be one of {', '.join(v1.VARIANTS)}, not {variant!r}")
        key = creds.secrets.get("key", "").encode()
        iv = creds.secrets.get("iv", "").encode()
        if len(key) != 16 or len(iv) != 16:
            raise ValueError(f"device {creds.id}: v1 key and iv must be 16 characters each")
        self._key = key
        self._ecb = AES.new(key, AES.MODE_ECB)
        self._iv = iv

    def encode(self, values: dict[str, float]) -> bytes:
        return self.encrypt(v1.format_reading(values))

    def encrypt(self, plaintext: bytes) -> bytes:
        """Same bytes as `v1.encrypt` (the tests check it), with one cipher call instead of one per block:
        the simulator drives the benchmarks and must not be their bottleneck."""
        data = v1.pad(plaintext)
        if self.variant == "chained":
            cipher = AES.new(self._key, AES.MODE_CBC, self._iv).encrypt(data)
        else:  # per_block: every block is AES(key, block XOR iv), i.e. ECB over data XOR (iv * blocks)
            n = len(data)
            mask = int.from_bytes(self._iv * (n // v1.BLOCK), "big")
            cipher = self._ecb.encrypt((int.from_bytes(data, "big") ^ mask).to_bytes(n, "big"))
        text = binascii.hexlify(cipher)
        return b"+".join(text[i:i + v1.BLOCK_HEX] for i in range(0, len(text), v1.BLOCK_HEX))
