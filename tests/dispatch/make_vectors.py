"""Regenerate tests/vectors/envelope.json: `python -m tests.dispatch.make_vectors`.

The keys are test-only 3072-bit RSA keys (also used by the dispatch tests, so no
test pays for key generation). RSA-OAEP and RSA-PSS are randomised, so a vector
fixes the AES key, IV, nonce and time: the header, ciphertext and tag are then
reproducible by any implementation; the wrapped key and signature are not, and
are checked by opening.
"""
from __future__ import annotations

import json
from pathlib import Path

from services.common import envelope as E

OUT = Path(__file__).resolve().parents[1] / "vectors" / "envelope.json"
NOW = 1763790000.0
NAMES = ("dispatch", "s1", "s2", "s3", "mallory")


def main() -> None:
    keys = {name: E.generate_key() for name in NAMES}
    pems = {name: E.private_pem(k).decode() for name, k in keys.items()}

    def sealed(payload: bytes, **kw) -> tuple[bytes, dict]:
        fixed = {"now": NOW, "nonce": bytes(range(16)), "aes_key": bytes(range(32, 64)),
                 "iv": bytes(range(12))}
        fixed.update(kw.pop("fixed", {}))
        args = {"kind": "params", "sender": "dispatch", "recipient": "s1"} | kw
        signer = args.pop("signer", args["sender"])
        env = E.seal(payload, sender_key=keys[signer], recipient_key=keys[args["recipient"]], **args, **fixed)
        return env, {**{k: (v.hex() if isinstance(v, bytes) else v) for k, v in fixed.items()}}

    payload = json.dumps({"station": "s1", "value_sets": [{"speed": 10}, {"speed": 12}]}).encode()
    good, fixed = sealed(payload)
    parsed = E.parse(good)
    flipped = bytearray(good)
    flipped[len(parsed.aad) + 4 + 3] ^= 0x01  # a bit of the ciphertext
    other_recipient, _ = sealed(payload, recipient="s2")
    forged, _ = sealed(payload, signer="mallory")
    old, _ = sealed(payload, fixed={"now": NOW - 300})
    future, _ = sealed(payload, fixed={"now": NOW + 300})
    from_mallory, _ = sealed(payload, sender="mallory")
    empty, empty_fixed = sealed(b"", kind="go")
    cases = [
        {"name": "valid", "envelope": good.hex(), "expect": "ok", "payload": payload.hex(),
         "seal": {**fixed, "kind": "params", "sender": "dispatch", "recipient": "s1",
                  "aad": parsed.aad.hex(), "ciphertext": parsed.ciphertext.hex(), "tag": parsed.tag.hex()}},
        {"name": "valid_empty_payload", "envelope": empty.hex(), "expect": "ok", "payload": ""},
        {"name": "flipped_bit", "envelope": bytes(flipped).hex(), "expect": "bad_signature"},
        {"name": "wrong_recipient", "envelope": other_recipient.hex(), "expect": "wrong_recipient"},
        {"name": "wrong_signature", "envelope": forged.hex(), "expect": "bad_signature"},
        {"name": "old_timestamp", "envelope": old.hex(), "expect": "stale"},
        {"name": "future_timestamp", "envelope": future.hex(), "expect": "stale"},
        {"name": "unknown_sender", "envelope": from_mallory.hex(), "expect": "unknown_sender"},
        {"name": "truncated", "envelope": good[:-10].hex(), "expect": "malformed"},
        {"name": "bad_magic", "envelope": (b"XSE1" + good[4:]).hex(), "expect": "malformed"},
        {"name": "trailing_bytes", "envelope": (good + b"\0").hex(), "expect": "malformed"},
    ]
    doc = {
        "about": "medsec sealed envelope test vectors (docs/envelope.md). Keys are test-only.",
        "open_as": {"recipient": "s1", "now": NOW, "window": E.DEFAULT_WINDOW,
                    "known_senders": ["dispatch", "s1", "s2", "s3"]},
        "replay": "opening `valid` twice with one nonce cache: the second is rejected with reason `replay`",
        "keys": pems,
        "cases": cases,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
