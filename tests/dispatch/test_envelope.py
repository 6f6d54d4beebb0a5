"""The envelope codec against its vectors, plus the properties the vectors cannot show."""
from __future__ import annotations

import os

import pytest

from services.common import envelope as E


def opener(vectors, keys, now=None):
    spec = vectors["open_as"]
    known = set(spec["known_senders"])
    return E.Opener(
        spec["recipient"], keys[spec["recipient"]],
        lambda sender: keys[sender].public_key() if sender in known else None,
        window=spec["window"], clock=lambda: spec["now"] if now is None else now,
    )


def test_vectors_open_or_fail_with_their_reason(vectors, keys):
    for case in vectors["cases"]:
        o = opener(vectors, keys)  # fresh nonce cache per case
        data = bytes.fromhex(case["envelope"])
        if case["expect"] == "ok":
            _, payload = o.open(data)
            assert payload.hex() == case["payload"], case["name"]
        else:
            with pytest.raises(E.EnvelopeError) as err:
                o.open(data)
            assert err.value.reason == case["expect"], case["name"]


def test_replayed_nonce_is_rejected(vectors, keys):
    o = opener(vectors, keys)
    data = bytes.fromhex(vectors["cases"][0]["envelope"])
    o.open(data)
    with pytest.raises(E.EnvelopeError) as err:
        o.open(data)
    assert err.value.reason == "replay"


def test_seal_is_reproducible_from_fixed_inputs(vectors, keys):
    case = vectors["cases"][0]
    s = case["seal"]
    data = E.seal(
        bytes.fromhex(case["payload"]), kind=s["kind"], sender=s["sender"], recipient=s["recipient"],
        sender_key=keys[s["sender"]], recipient_key=keys[s["recipient"]], now=s["now"],
        nonce=bytes.fromhex(s["nonce"]), aes_key=bytes.fromhex(s["aes_key"]), iv=bytes.fromhex(s["iv"]),
    )
    env = E.parse(data)
    # The wrapped key sits inside the AAD and is randomised by OAEP: compare around it.
    expected_aad = bytes.fromhex(s["aad"])
    assert env.aad[:E._FIXED.size] == expected_aad[:E._FIXED.size]
    assert env.aad[-E.IV_LEN:] == expected_aad[-E.IV_LEN:]
    assert (env.kind, env.sender, env.recipient) == ("params", "dispatch", "s1")
    # GCM output depends on the AAD (and so on the wrapped key): it must decrypt, not match bytes.
    assert E.decrypt(env, keys["s1"]) == bytes.fromhex(case["payload"])


def test_every_single_bit_flip_region_is_rejected(keys):
    data = E.seal(b"x" * 100, kind="result", sender="s1", recipient="dispatch",
                  sender_key=keys["s1"], recipient_key=keys["dispatch"])
    for pos in (0, 5, 20, 30, 40, 500, len(data) - 400, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x80
        o = E.Opener("dispatch", keys["dispatch"], lambda s: keys.get(s) and keys[s].public_key())
        with pytest.raises(E.EnvelopeError) as err:
            o.open(bytes(bad))
        assert err.value.reason in {"malformed", "bad_signature", "wrong_recipient", "unknown_sender"}, pos


def test_ten_megabytes_round_trip(keys):
    payload = os.urandom(10 * 1024 * 1024)
    data = E.seal(payload, kind="params", sender="dispatch", recipient="s2",
                  sender_key=keys["dispatch"], recipient_key=keys["s2"])
    assert len(data) < len(payload) + 2000  # binary framing: no base64 growth
    _, out = E.Opener("s2", keys["s2"], lambda s: keys["dispatch"].public_key()).open(data)
    assert out == payload


def test_oversized_length_refused_before_crypto(keys):
    data = E.seal(b"abc", kind="go", sender="dispatch", recipient="s1",
                  sender_key=keys["dispatch"], recipient_key=keys["s1"])
    with pytest.raises(E.EnvelopeError) as err:
        E.parse(data, max_payload=2)
    assert err.value.reason == "malformed"


@pytest.mark.parametrize("bad", [b"", b"MSE1", b"\x00" * 50, "text"])
def test_garbage_is_malformed(bad):
    with pytest.raises(E.EnvelopeError) as err:
        E.parse(bad)
    assert err.value.reason == "malformed"


def test_nonce_cache_is_bounded_and_never_lets_an_evicted_replay_through():
    cache = E.NonceCache(window=120, per_sender=3)
    now = 1000.0
    for i in range(5):
        cache.check_and_add("s1", bytes([i]) * 16, int(now * 1000) + i, now)
    assert len(cache) == 3
    with pytest.raises(E.EnvelopeError) as err:  # nonce 0 was evicted, the floor still refuses it
        cache.check_and_add("s1", bytes([0]) * 16, int(now * 1000), now)
    assert err.value.reason == "replay"
    cache.check_and_add("s2", bytes([0]) * 16, int(now * 1000), now)  # other senders unaffected


def test_nonce_cache_forgets_after_the_window():
    cache = E.NonceCache(window=10)
    cache.check_and_add("s1", b"a" * 16, 1_000_000, 1000.0)
    cache.check_and_add("s1", b"b" * 16, 1_020_000, 1020.0)
    assert len(cache) == 1


def test_small_keys_refused(keys):
    from Crypto.PublicKey import RSA
    small = RSA.generate(1024)
    with pytest.raises(ValueError):
        E.load_public_key(E.public_pem(small))
    with pytest.raises(ValueError):
        E.load_public_key(E.private_pem(keys["s1"]))
    assert E.load_public_key(E.public_pem(keys["s1"])).size_in_bits() == 3072
