"""An independent implementation of what the configuration page sends (pycryptodome + hmac), for tests."""

from __future__ import annotations

import hashlib
import hmac
import os

from Crypto.Cipher import AES
from Crypto.Util.Padding import pad

FIELDS = ("server_ip", "server_port", "wifi_name", "wifi_pass")


def seal(key1: str, values: dict[str, str], nonce: str = "") -> dict[str, str]:
    key = key1.encode()
    params = {"nonce": nonce}
    for name in FIELDS:
        iv = os.urandom(16)
        params[name] = (iv + AES.new(key, AES.MODE_CBC, iv=iv).encrypt(pad(values[name].encode(), 16))).hex()
    mac_key = hmac.new(key, b"medsec config mac v2", hashlib.sha256).digest()
    text = b"\n".join(
        [b"medsec-config-v2", f"nonce={nonce}".encode()] + [f"{n}={params[n]}".encode() for n in FIELDS]
    )
    params["mac"] = hmac.new(mac_key, text, hashlib.sha256).hexdigest()
    return params


def legacy(key1: str, values: dict[str, str]) -> dict[str, str]:
    """The original page: '#' left padding to 16, static IV BBBB..., one block per field."""
    out = {}
    for name in FIELDS:
        text = values[name].rjust(16, "#").encode()
        out[name] = AES.new(key1.encode(), AES.MODE_CBC, iv=b"B" * 16).encrypt(text).hex()
    return out
