"""Node-RED's encrypted credentials file (flows_cred.json), written without Node-RED. Pure.

Node-RED encrypts it with AES-256-CTR under SHA-256(credentialSecret); the file holds
{"$": hex(iv) + base64(ciphertext)} (@node-red/runtime/lib/nodes/credentials.js).
"""
from __future__ import annotations

import base64
import hashlib
import json
import secrets

from Crypto.Cipher import AES


def _cipher(secret: str, iv: bytes):
    key = hashlib.sha256(secret.encode()).digest()
    return AES.new(key, AES.MODE_CTR, nonce=b"", initial_value=iv)


def encrypt(credentials: dict[str, dict[str, str]], secret: str, iv: bytes | None = None) -> dict[str, str]:
    iv = iv if iv is not None else secrets.token_bytes(16)
    data = _cipher(secret, iv).encrypt(json.dumps(credentials).encode())
    return {"$": iv.hex() + base64.b64encode(data).decode()}


def decrypt(blob: dict[str, str], secret: str) -> dict[str, dict[str, str]]:
    text = blob["$"]
    iv = bytes.fromhex(text[:32])
    return json.loads(_cipher(secret, iv).decrypt(base64.b64decode(text[32:])))
