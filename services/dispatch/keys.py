"""Keys of the dispatch workflow: the server's own pair, and station public keys from key-admin.

The server's pair is generated at first start into the state dir (private 0600).
Station public keys live in the key store, which only auth and keyadmin open;
the server asks the key-admin API for them (GET /api/v1/stations/<id>, with its
own token of scope stations:read, secrets/dispatch.token) for every envelope by
default, so a revoked station is refused as soon as the DELETE has answered;
MEDSEC_DISPATCH_KEY_TTL > 0 caches answers that long.
"""
from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

from Crypto.PublicKey import RSA

from services.common import envelope
from services.common.adminclient import AdminApiError, AdminClient, quote
from services.common.config import Config
from services.common.state import check_private, write_secret
from services.common.stations import dispatch_dir, server_public_path


def server_key_path(config: Config) -> Path:
    return dispatch_dir(config) / "server_key.pem"


def generate_key(bits: int = envelope.RSA_BITS) -> RSA.RsaKey:
    """A fresh RSA key pair: OpenSSL's C generator if the `openssl` tool is here (~10x faster than
    pycryptodome's, which is the fallback). The key travels over a pipe, never a file."""
    tool = shutil.which("openssl")
    if tool:
        try:
            pem = subprocess.run(
                [tool, "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}"],
                capture_output=True, check=True, timeout=120,
            ).stdout
            key = RSA.import_key(pem)
            if key.size_in_bits() == bits and key.has_private():
                return key
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    return envelope.generate_key(bits)


def load_or_create_server_key(config: Config) -> RSA.RsaKey:
    path = server_key_path(config)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists():
        check_private(path)
        key = RSA.import_key(path.read_bytes())
    else:
        key = generate_key()
        write_secret(path, envelope.private_pem(key))
    public = server_public_path(config)
    pem = envelope.public_pem(key)
    if not public.exists() or public.read_text() != pem:
        public.write_text(pem)
    return key


def load_server_public(config: Config) -> RSA.RsaKey:
    path = server_public_path(config)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: start the dispatch service once (medsec up)")
    return RSA.import_key(path.read_text())


class StationKeyError(Exception):
    """The key-admin API could not be asked (down, bad token)."""


class StationKeys:
    """Station public keys from the key-admin API, cached for `ttl` seconds."""

    def __init__(self, api: AdminClient, ttl: float = 0.0) -> None:
        self.api = api
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, RSA.RsaKey | None]] = {}

    def fetch(self, station: str) -> RSA.RsaKey | None:
        try:
            status, doc = self.api.request("GET", f"/stations/{quote(station)}")
        except AdminApiError as exc:
            raise StationKeyError(f"key-admin unreachable: {exc.message}") from None
        if status == 404:
            return None
        if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("public_key"), str):
            raise StationKeyError(f"key-admin answered {status} for station {station!r}")
        if doc.get("revoked_at"):
            return None
        return envelope.load_public_key(doc["public_key"])

    def __call__(self, station: str) -> RSA.RsaKey | None:
        now = time.monotonic()
        if self.ttl <= 0:
            return self.fetch(station)
        with self._lock:
            hit = self._cache.get(station)
            if hit and now - hit[0] < self.ttl:
                return hit[1]
        key = self.fetch(station)
        with self._lock:
            self._cache[station] = (now, key)
        return key
