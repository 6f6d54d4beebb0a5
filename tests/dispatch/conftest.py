"""Test keys come from the envelope vectors: 3072-bit RSA without paying for generation."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from Crypto.PublicKey import RSA

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "envelope.json"


@pytest.fixture(scope="session")
def vectors() -> dict:
    return json.loads(VECTORS.read_text())


@pytest.fixture(scope="session")
def keys(vectors) -> dict[str, RSA.RsaKey]:
    return {name: RSA.import_key(pem) for name, pem in vectors["keys"].items()}
