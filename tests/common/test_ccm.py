"""The device-side AES-CCM and HKDF (services/common/ccm.py) against published vectors and pycryptodome."""
import json
import random
from pathlib import Path

import pytest
from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

from services.common import ccm, v2

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "v2.json").read_text())
RFC3610 = VECTORS["rfc3610"]["vectors"]
H = bytes.fromhex


def _pycryptodome(key, nonce, aad, plaintext, tag_len):
    cipher = AES.new(key, AES.MODE_CCM, nonce=nonce, mac_len=tag_len)
    cipher.update(aad)
    ct, tag = cipher.encrypt_and_digest(plaintext)
    return ct + tag


@pytest.mark.parametrize("vec", RFC3610, ids=lambda v: f"packet{v['packet']}")
def test_rfc3610_vectors_on_device_code_and_pycryptodome(vec):
    key, nonce, aad, pt = H(vec["key"]), H(vec["nonce"]), H(vec["aad"]), H(vec["plaintext"])
    expected = H(vec["ciphertext"] + vec["tag"])
    tag_len = len(vec["tag"]) // 2
    assert ccm.encrypt(key, nonce, aad, pt, tag_len) == expected
    assert _pycryptodome(key, nonce, aad, pt, tag_len) == expected
    assert ccm.decrypt(key, nonce, aad, expected, tag_len) == pt


@pytest.mark.parametrize("vec", RFC3610[:3], ids=lambda v: f"packet{v['packet']}")
def test_rfc3610_tampered_packets_are_refused(vec):
    key, nonce, aad = H(vec["key"]), H(vec["nonce"]), H(vec["aad"])
    good = H(vec["ciphertext"] + vec["tag"])
    tag_len = len(vec["tag"]) // 2
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x01
        with pytest.raises(ccm.CcmError) as err:
            ccm.decrypt(key, nonce, aad, bytes(bad), tag_len)
        assert err.value.reason == "bad_tag"
    with pytest.raises(ccm.CcmError):
        ccm.decrypt(key, nonce, aad[:-1] + bytes([aad[-1] ^ 0x80]), good, tag_len)


def test_random_inputs_agree_with_pycryptodome_both_ways():
    rng = random.Random(3610)
    for _ in range(300):
        key = rng.randbytes(16)
        nonce = rng.randbytes(rng.choice([7, 11, 13]))
        aad = rng.randbytes(rng.choice([0, 1, 15, 16, 17, 40]))
        pt = rng.randbytes(rng.randrange(0, 300))
        ours = ccm.encrypt(key, nonce, aad, pt, 8)
        assert ours == _pycryptodome(key, nonce, aad, pt, 8)
        cipher = AES.new(key, AES.MODE_CCM, nonce=nonce, mac_len=8)
        cipher.update(aad)
        assert cipher.decrypt_and_verify(ours[:-8], ours[-8:]) == pt
        assert ccm.decrypt(key, nonce, aad, ours, 8) == pt


def test_the_gateways_openssl_ccm_and_the_devices_pure_one_give_the_same_bytes():
    """The gateway seals and opens with OpenSSL (v2.OpenSslCcm), devices with services/common/ccm.py."""
    rng = random.Random(4309)
    for _ in range(300):
        key, nonce = rng.randbytes(16), rng.randbytes(13)
        aad, pt = rng.randbytes(rng.choice([0, 14, 16, 40])), rng.randbytes(rng.randrange(0, 300))
        gateway, device = v2.OpenSslCcm(key), ccm.Ccm(key, v2.TAG)
        sealed = device.encrypt(nonce, aad, pt)
        assert gateway.encrypt(nonce, aad, pt) == sealed
        assert gateway.decrypt(nonce, aad, sealed) == device.decrypt(nonce, aad, sealed) == pt
        spot = rng.randrange(len(sealed))
        bad = sealed[:spot] + bytes([sealed[spot] ^ 1 << rng.randrange(8)]) + sealed[spot + 1:]
        for cipher in (gateway, device):
            with pytest.raises(ccm.CcmError) as err:
                cipher.decrypt(nonce, aad, bad)
            assert err.value.reason == "bad_tag"
    with pytest.raises(ccm.CcmError):
        v2.OpenSslCcm(bytes(16)).decrypt(bytes(13), b"", b"short")


def test_parameter_errors_are_clear():
    with pytest.raises(ccm.CcmError, match="bad_nonce"):
        ccm.encrypt(bytes(16), bytes(14), b"", b"x")
    with pytest.raises(ccm.CcmError, match="bad_key"):
        ccm.encrypt(bytes(15), bytes(13), b"", b"x")
    with pytest.raises(ccm.CcmError, match="bad_tag"):
        ccm.decrypt(bytes(16), bytes(13), b"", b"short")


def test_hkdf_rfc5869_and_pycryptodome():
    vec = VECTORS["hkdf"]["vectors"][0]
    okm = ccm.hkdf_sha256(H(vec["ikm"]), H(vec["salt"]), H(vec["info"]), vec["length"])
    assert okm.hex() == vec["okm"]
    rng = random.Random(5869)
    for _ in range(50):
        ikm, salt, info = rng.randbytes(16), rng.randbytes(rng.randrange(0, 40)), rng.randbytes(20)
        length = rng.randrange(1, 100)
        ref = HKDF(ikm, length, salt, SHA256, context=info)
        assert ccm.hkdf_sha256(ikm, salt, info, length) == ref


def test_hmac_matches_the_standard_library_with_long_keys():
    import hashlib
    import hmac
    for key in (b"", b"k", bytes(64), bytes(range(100))):
        assert ccm.hmac_sha256(key, b"medsec") == hmac.new(key, b"medsec", hashlib.sha256).digest()


def test_source_avoids_what_micropython_lacks():
    """Both files are copied to the Pico: keep them to the subset MicroPython compiles and runs."""
    import re
    root = Path(__file__).parents[2]
    for path in (root / "services" / "common" / "ccm.py", root / "services" / "common" / "v2device.py"):
        source = path.read_text()
        banned = ("from __future__", "import typing", "@dataclass", ".hex()", "import hmac", "strict=")
        for word in banned:
            assert word not in source, (path.name, word)
        assert not re.search(r"(?<![\w\\])f[\"']", source), (path.name, "f-string")
        assert not re.search(r"\.(to|from)_bytes\([^)]*=", source), (path.name, "int keyword")
