"""A simulated v1 device writes exactly what the gateway's v1 codec decodes."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from Crypto.Cipher import AES

from services.common import v1
from services.sim.devices import Credentials, V1Device
from services.sim.protocols import UnknownProtocol, device_class, make_device
from services.sim.vitals import Vitals

CREDS = Credentials("sim-001", "v1", {"key": "1234567890123456", "iv": "AAAAAAAAAAAAAAAA"})


@pytest.mark.parametrize("variant", ["chained", "per_block"])
def test_a_simulated_reading_decodes_to_the_same_text(variant: str) -> None:
    device = make_device(CREDS, variant)
    assert isinstance(device, V1Device)
    ecb = AES.new(b"1234567890123456", AES.MODE_ECB)
    vitals = Vitals(random.Random(3))
    stream = b""
    texts = []
    for i in range(50):
        values = vitals.sample(i * 0.05)
        texts.append(v1.format_reading(values))
        stream += device.encode(values)
    decoded = []
    while stream:
        scan = v1.scan(stream)
        assert scan is not None
        assert v1.first_block_matches(ecb, b"AAAAAAAAAAAAAAAA", scan.blocks[0])
        plain = v1.strip_padding(v1.decrypt(ecb, b"AAAAAAAAAAAAAAAA", scan.blocks, variant))
        decoded.append(plain)
        assert v1.detect_variant(ecb, b"AAAAAAAAAAAAAAAA", scan.blocks) == variant
        stream = stream[scan.consumed:]
    assert decoded == texts


def test_matches_the_independently_encoded_vectors() -> None:
    vectors = json.loads((Path(__file__).parents[1] / "vectors" / "v1.json").read_text())["readings"]
    for case in vectors:
        device = V1Device(Credentials("x", "v1", {"key": case["key"], "iv": case["iv"]}), case["variant"])
        assert device.encrypt(case["plaintext"].encode()) == case["wire"].encode()
    assert {case["variant"] for case in vectors} == {"chained", "per_block"}


@pytest.mark.parametrize("variant", ["chained", "per_block"])
def test_fast_encryption_equals_the_reference_codec(variant: str) -> None:
    device = V1Device(CREDS, variant)
    ecb = AES.new(b"1234567890123456", AES.MODE_ECB)
    rng = random.Random(5)
    for length in range(0, 200):  # every padding length, 0-15, several block counts
        plaintext = bytes(rng.randrange(32, 127) for _ in range(length))
        assert device.encrypt(plaintext) == v1.encrypt(ecb.encrypt, b"AAAAAAAAAAAAAAAA", plaintext, variant)


def test_bad_credentials_and_unknown_protocols_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="16 characters"):
        V1Device(Credentials("d", "v1", {"key": "short", "iv": "AAAAAAAAAAAAAAAA"}))
    with pytest.raises(ValueError, match="variant"):
        V1Device(CREDS, "cbc")
    with pytest.raises(UnknownProtocol, match="unknown protocol"):
        device_class("v9")
    assert device_class("v1") is V1Device
