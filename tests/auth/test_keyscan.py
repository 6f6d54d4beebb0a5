"""The fast identification pass (identify.KeyScan) finds exactly what the plain loop (`match`) finds,
with the compiled key loop (services/auth/_keyscan.c) and with its fallback in Python."""
from __future__ import annotations

import functools
import os
import random
import types

import pytest

from services.auth import identify
from services.auth.identify import KeyScan, V1Keys, candidate, match, match_many
from services.common import v1
from services.keystore.models import Credential
from tests.auth.test_identify_batch import _block0, _random_text

NOW = 1000.0


# FIPS-197 appendix C.1: AES-128 with key 00..0f turns 00112233..ff into this block.
FIPS_KEY = bytes(range(16))
FIPS_PLAIN = bytes.fromhex("00112233445566778899aabbccddeeff")
FIPS_CIPHER = bytes.fromhex("69c4e0d86a7b0430d8cdb78070b4c55a")


def _cpu_has_aes() -> bool:
    with open("/proc/cpuinfo") as info:
        return any(line.startswith("flags") and " aes" in line for line in info)


@pytest.fixture(autouse=True, params=["aesni", "openssl", "python"])
def key_loop(request, monkeypatch):
    """Every test here runs on the three key loops: the compiled one with the CPU's AES
    instructions, the compiled one over OpenSSL (a CPU without them), and the Python one they
    replace where no C compiler was at install."""
    if request.param == "python":
        monkeypatch.setattr(identify, "_keyscan", None)
    if request.param == "openssl":
        from services.auth import _keyscan

        without = types.SimpleNamespace(Scanner=functools.partial(_keyscan.Scanner, aesni=False))
        monkeypatch.setattr(identify, "_keyscan", without)
    return request.param


def test_the_compiled_key_loop_is_built_and_used(key_loop):
    """`make test` installs with a C compiler: the fast loop must be there, with the CPU's AES
    instructions where it has them, or identification among 10,000 keys silently costs more
    (six times without AES-NI, fifty times in Python)."""
    scan = KeyScan([candidate(Credential("d", "v1", 1, {"key": "k" * 16, "iv": "i" * 16}, None, False),
                              True, False)])
    assert scan.compiled == (key_loop != "python")
    if scan.compiled:
        assert scan._compiled.aesni == (key_loop == "aesni" and _cpu_has_aes())


@pytest.mark.parametrize("aesni", [True, False])
def test_the_compiled_loop_decrypts_as_fips_197_says(aesni):
    """The known answer, under every position of the key among 1 to 9 keys (the AES-NI loop takes
    keys four at a time, the rest one by one), in one() and in many()."""
    from services.auth import _keyscan

    for n in range(1, 10):
        for at in range(n):
            keys = [os.urandom(16) for _ in range(n)]
            keys[at] = FIPS_KEY
            expected = b"".join(FIPS_PLAIN[:9] if i == at else os.urandom(9) for i in range(n))
            scan = _keyscan.Scanner(b"".join(keys), expected, aesni=aesni)
            assert scan.one(FIPS_CIPHER) == [at]
            noise = os.urandom(16)
            assert scan.many(noise + FIPS_CIPHER, 0, n) == [(1, at)]
            assert scan.many(FIPS_CIPHER, at + 1, n) == []


def _cands(rng: random.Random, n: int) -> tuple[list, list[tuple[str, str]]]:
    """n credentials in every state (current, in a grace period, past it, revoked), and two clashes
    from before the store's check: the same key and IV head as another credential."""
    secrets = [(_random_text(rng), _random_text(rng)) for _ in range(n)]
    cands = []
    for i, (key, iv) in enumerate(secrets):
        expires = [None, NOW + 50, NOW - 50][i % 3]
        cands.append(candidate(Credential(f"dev-{i}", "v1", 1, {"key": key, "iv": iv}, expires, i % 7 == 0),
                               i % 2 == 0, False))
    for i in (3, n - 1):
        key, iv = secrets[i]
        cands.insert(i // 2, candidate(Credential(f"dup-{i}", "v1", 2, {"key": key, "iv": iv[:9] + "~" * 7},
                                                  None, False), True, False))
    return cands, secrets


def _blocks(rng: random.Random, secrets: list[tuple[str, str]]) -> list[bytes]:
    blocks = [_block0(k, i, rng.choice(["chained", "per_block"])) for k, i in rng.sample(secrets, 40)]
    blocks += [_block0(*secrets[3]), _block0(*secrets[-1])]  # the clashes: two credentials each
    blocks += [os.urandom(v1.BLOCK) for _ in range(10)]  # no key at all
    blocks += [_block0(_random_text(rng), _random_text(rng)) for _ in range(5)]  # well formed, unknown key
    rng.shuffle(blocks)
    return blocks


def test_one_block_pass_finds_what_the_loop_finds():
    rng = random.Random(11)
    cands, secrets = _cands(rng, 3000)
    scan = KeyScan(cands)
    blocks = _blocks(rng, secrets)
    found = [scan.one(b) for b in blocks]
    assert found == [match(cands, b) for b in blocks]
    assert {len(f) for f in found} == {0, 1, 2}  # the clashes are found twice, never picked from
    assert KeyScan([]).one(blocks[0]) == []


def test_many_blocks_pass_in_steps_finds_what_the_loop_finds(monkeypatch):
    rng = random.Random(12)
    cands, secrets = _cands(rng, 1500)
    blocks = _blocks(rng, secrets) + _blocks(rng, secrets)[:9]  # a block twice in one batch
    expected = match_many(cands, blocks)
    assert KeyScan(cands).many(blocks) == expected
    monkeypatch.setattr(identify, "STEP_WORK", 5_000)  # ~70 keys a step: many steps
    steps = list(KeyScan(cands).many_steps(blocks))
    assert len(steps) > 10 and all(s is None for s in steps[:-1])
    assert steps[-1] == expected
    assert list(KeyScan(cands).many_steps([])) == [[]]


def test_an_iv_shorter_than_the_prefix_takes_the_plain_loop():
    """A credential written behind the store's back with a short IV: still exact, by `match`."""
    rng = random.Random(13)
    cands, secrets = _cands(rng, 50)
    short = Credential("short", "v1", 1, {"key": "k" * 16, "iv": "abc"}, None, False)
    cands.append(candidate(short, True, False))
    scan = KeyScan(cands)
    for block in _blocks(rng, secrets):
        assert scan.one(block) == match(cands, block)


def test_a_reload_between_steps_is_not_taken(monkeypatch):
    """Another client's request may reload the keys between two steps of a pass: its results then
    name the old list, and identification does the new one instead."""
    rng = random.Random(14)
    secrets = [(_random_text(rng), _random_text(rng)) for _ in range(300)]
    creds = [Credential(f"dev-{i}", "v1", 1, {"key": k, "iv": iv}, None, False)
             for i, (k, iv) in enumerate(secrets)]
    keys = V1Keys()
    keys.load(creds, True, NOW)
    monkeypatch.setattr(identify, "STEP_WORK", 2_000)
    blocks = [_block0(*secrets[0]), _block0(*secrets[1])]
    steps = keys.identify_batch_steps(blocks)
    assert next(steps) is None
    revoked = Credential("dev-0", "v1", 1, {"key": secrets[0][0], "iv": secrets[0][1]}, None, True)
    keys.load([revoked], False, NOW)  # dev-0 revoked meanwhile
    *_, pre = steps
    assert [m.device_id for p in pre for m in p.matches] == ["dev-0", "dev-1"]
    found, _, _ = keys.identify(blocks[0], pre[0])
    assert found is not pre[0].matches  # a pass over the new list
    assert [(c.device_id, c.revoked) for c in found] == [("dev-0", True)]
    *_, again = keys.identify_batch_steps(blocks)  # no reload this time: the batch's result stands
    assert keys.identify(blocks[1], again[1])[0] is again[1].matches


@pytest.mark.parametrize("n", [1, 2, 16, 17])
def test_identify_batch_steps_equals_identify(n):
    rng = random.Random(15 + n)
    secrets = [(_random_text(rng), _random_text(rng)) for _ in range(200)]
    keys = V1Keys()
    keys.load([Credential(f"d{i}", "v1", 1, {"key": k, "iv": iv}, None, False)
               for i, (k, iv) in enumerate(secrets)], True, NOW)
    blocks = [_block0(*s) for s in rng.sample(secrets, n)]
    batch = keys.identify_batch(blocks)
    assert [p.matches for p in batch] == [keys.identify(b)[0] for b in blocks]


def test_the_compiled_loop_refuses_malformed_input():
    """Its contract, checked in C: whole 16-byte keys, a 9-byte prefix each, one 16-byte block."""
    from services.auth import _keyscan

    with pytest.raises(ValueError):
        _keyscan.Scanner(b"k" * 17, b"p" * 9)
    with pytest.raises(ValueError):
        _keyscan.Scanner(b"k" * 32, b"p" * 9)
    scan = _keyscan.Scanner(b"k" * 32, b"p" * 18)
    with pytest.raises(ValueError):
        scan.one(b"x" * 15)
    with pytest.raises(ValueError):
        scan.many(b"x" * 17, 0, 2)
    assert len(scan) == 2 and scan.many(b"", 0, 2) == [] and scan.many(b"x" * 16, 5, 9) == []
    assert len(_keyscan.Scanner(b"", b"")) == 0
