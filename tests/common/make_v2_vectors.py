"""Regenerate tests/vectors/v2.json: `python -m tests.common.make_v2_vectors`.

Written from docs/protocol-v2.md with pycryptodome's own AES-CCM and HKDF, not with
the project's codec (services/common/ccm.py, v2device.py, v2.py), so the vectors check
that code rather than repeat it. The RFC 3610 and RFC 5869 sections are published
vectors and are kept as they are in the file.
"""
from __future__ import annotations

import json
from pathlib import Path

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

OUT = Path(__file__).resolve().parents[1] / "vectors" / "v2.json"
# (master key, kid, seq, reading, refusal reason): short, typical and longest kid; first, typical, last seq
CASES = [
    ("000102030405060708090a0b0c0d0e0f", "01", 1,
     '{"Temp":"36.600","TempMcu":"23.700","PulseSig":"2.123","Acel'
     '_x":"0.000","Acel_y":"0.000","Acel_z":"0.000","TempMpu":"23.400"}',
     "out_of_range"),
    ("8f1e2d3c4b5a69788796a5b4c3d2e1f0", "a1b2c3d4", 1000,
     '{"Temp":"37.125","TempMcu":"25.000","PulseSig":"1.650","Acel'
     '_x":"-0.25","Acel_y":"0.981","Acel_z":"-1.02","TempMpu":"24.900"}',
     "not_numeric"),
    ("ffffffffffffffffffffffffffffffff", "00112233445566", 1099511627775,
     '{"Temp":"35.000","TempMcu":"30.123","PulseSig":"3.300","Acel'
     '_x":"15.999","Acel_y":"-15.50","Acel_z":"0.001","TempMpu":"-5.500"}',
     "refused"),
]
REASON_CODES = {"not_json": 1, "missing_field": 2, "unknown_field": 3, "not_string": 4, "not_numeric": 5,
                "out_of_range": 6, "refused": 255}
COUNTER = [(1001, 1000), (1, 10), ((1 << 40), 1000)]


def hkdf(master: bytes, info: bytes, length: int) -> bytes:
    return HKDF(master, length, b"medsec-v2", SHA256, context=info)


def nonce(common_iv: bytes, kid: bytes, seq: int, refusal: bool = False) -> bytes:
    piv = bytes([len(kid) | (0x80 if refusal else 0)]) + bytes(7 - len(kid)) + kid + seq.to_bytes(5, "big")
    return bytes(a ^ b for a, b in zip(piv, common_iv, strict=True))


def frame(kind: int, key: bytes, n: bytes, kid: bytes, seq: int, plaintext: bytes) -> bytes:
    head = bytes([kind, 2, 0, len(kid)]) + kid + seq.to_bytes(5, "big")
    head += (len(plaintext) + 8).to_bytes(2, "big")
    cipher = AES.new(key, AES.MODE_CCM, nonce=n, mac_len=8)
    cipher.update(head)
    body, tag = cipher.encrypt_and_digest(plaintext)
    return head + body + tag


def counter_record(ceiling: int, step: int) -> str:
    text = f"{ceiling} {step}"
    return f"{text} {SHA256.new(b'medsec v2 counter ' + text.encode()).hexdigest()[:8]}\n"


def main() -> None:
    old = json.loads(OUT.read_text())
    frames = []
    for master_hex, kid_hex, seq, plaintext, reason in CASES:
        master, kid = bytes.fromhex(master_hex), bytes.fromhex(kid_hex)
        d2g = hkdf(master, b"medsec v2 key device->gateway " + kid, 16)
        g2d = hkdf(master, b"medsec v2 key gateway->device " + kid, 16)
        iv = hkdf(master, b"medsec v2 common iv " + kid, 13)
        frames.append({
            "master_key": master_hex, "kid": kid_hex,
            "key_d2g": d2g.hex(), "key_g2d": g2d.hex(), "common_iv": iv.hex(),
            "seq": seq, "nonce": nonce(iv, kid, seq).hex(), "plaintext": plaintext,
            "frame": frame(0xC2, d2g, nonce(iv, kid, seq), kid, seq, plaintext.encode()).hex(),
            "ack": frame(0xC3, g2d, nonce(iv, kid, seq), kid, seq, b"").hex(),
            "refusal_reason": reason, "refusal_code": REASON_CODES[reason],
            "refusal_nonce": nonce(iv, kid, seq, refusal=True).hex(),
            "refusal": frame(0xC4, g2d, nonce(iv, kid, seq, refusal=True), kid, seq,
                             bytes([REASON_CODES[reason]])).hex(),
        })
    vectors = {
        "about": "medsec protocol v2 test vectors (docs/protocol-v2.md), written by "
                 "tests/common/make_v2_vectors.py. 'rfc3610' and 'hkdf' are published vectors copied from "
                 "their RFCs; 'frames' (readings, acks, refusals) and 'counter' (the device's counter "
                 "file records) come from pycryptodome's AES-CCM and HKDF following the spec, and are "
                 "checked against the gateway (services/common/v2.py) and the device side "
                 "(services/common/v2device.py, under CPython and MicroPython).",
        "rfc3610": old["rfc3610"],
        "hkdf": old["hkdf"],
        "frames": frames,
        "refusal_codes": REASON_CODES,
        "counter": [{"ceiling": c, "step": s, "record": counter_record(c, s)} for c, s in COUNTER],
    }
    OUT.write_text(json.dumps(vectors, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
