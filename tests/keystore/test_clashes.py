"""Issue 14 item 1: no two credentials that v1 identification could confuse, on every backend.

Identification decides on block 0, which depends on the key and the IV's first 9 bytes only
(v1.FIRST_BLOCK_PREFIX). The store refuses a credential sharing both with any credential it
holds, whatever its state, and names the device it clashes with, never a secret.
"""
from __future__ import annotations

import random
import string

import pytest

from services.keystore.backends import open_store
from services.keystore.credentials import IDENT_IV_BYTES, make_secret
from services.keystore.models import CredentialsInUse, NewDevice

ALPHABET = string.ascii_letters + string.digits + "-_!#"


def text(rng: random.Random, n: int = 16) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def other_char(rng: random.Random, c: str) -> str:
    return rng.choice([a for a in ALPHABET if a != c])


def same_ident(rng: random.Random, iv: str) -> str:
    """Another IV with the same first 9 characters: some (at least one) of its tail changed."""
    tail = list(iv[IDENT_IV_BYTES:])
    for i in rng.sample(range(len(tail)), rng.randint(1, len(tail))):
        tail[i] = other_char(rng, tail[i])
    return iv[:IDENT_IV_BYTES] + "".join(tail)


def v1(device_id: str, key: str, iv: str) -> NewDevice:
    return NewDevice(device_id, "v1", make_secret("v1", {"key": key, "iv": iv}))


def refused(clashing: str, call, *secrets: str) -> str:
    with pytest.raises(CredentialsInUse) as err:
        call()
    message = str(err.value)
    assert f"clashes with device {clashing} " in message, message
    for secret in secrets:
        assert secret not in message and secret[:IDENT_IV_BYTES] not in message
    return message


@pytest.fixture
def rng(request) -> random.Random:
    return random.Random(request.node.name)


def test_same_key_and_iv_head_refused_whatever_the_tail(store, rng):
    for n in range(12):
        key, iv = text(rng), text(rng)
        store.add(v1(f"a{n}", key, iv))
        twin = same_ident(rng, iv)
        refused(f"a{n}", lambda k=key, i=twin, n=n: store.add(v1(f"b{n}", k, i)), key, iv, twin)
        assert store.get(f"b{n}") is None
    assert store.credential_clashes() == []


def test_identical_credentials_refused(store, rng):
    key, iv = text(rng), text(rng)
    store.add(v1("first", key, iv))
    message = refused("first", lambda: store.add(v1("second", key, iv)), key, iv)
    assert "current credentials" in message


def test_different_key_or_iv_head_accepted(store, rng):
    key, iv = text(rng), text(rng)
    store.add(v1("base", key, iv))
    for n in range(12):
        # One character changed anywhere in the key, or anywhere in the IV's first 9.
        k = list(key)
        pos = rng.randrange(16)
        k[pos] = other_char(rng, k[pos])
        store.add(v1(f"k{n}", "".join(k), same_ident(rng, iv)))
        i = list(iv)
        pos = rng.randrange(IDENT_IV_BYTES)
        i[pos] = other_char(rng, i[pos])
        store.add(v1(f"i{n}", key, "".join(i)))
    assert store.credential_clashes() == []


def test_clash_with_a_revoked_device(store, rng):
    key, iv = text(rng), text(rng)
    store.add(v1("gone", key, iv))
    store.revoke("gone")
    for new_iv in (iv, same_ident(rng, iv)):
        message = refused("gone", lambda i=new_iv: store.add(v1("new", key, i)), key, iv)
        assert "(revoked credentials)" in message


def test_clash_with_a_credential_in_its_grace_period_or_expired(store, rng):
    t = [1000.0]
    store._clock = lambda: t[0]
    key, iv = text(rng), text(rng)
    store.add(v1("rotating", key, iv))
    store.rotate("rotating", make_secret("v1"), grace=3600)
    message = refused("rotating", lambda: store.add(v1("new", key, same_ident(rng, iv))), key, iv)
    assert "in its rotation grace period" in message
    t[0] += 7200  # the grace period is over: the old credential is expired, and still refused
    message = refused("rotating", lambda: store.add(v1("new", key, iv)), key, iv)
    assert "(expired credentials)" in message
    key2, iv2 = text(rng), text(rng)
    store.add(v1("confirmed", key2, iv2))
    store.rotate("confirmed", make_secret("v1"), grace=3600)
    store.confirm("confirmed", 2)  # first use of the new key ends the old one's grace at once
    refused("confirmed", lambda: store.add(v1("new", key2, same_ident(rng, iv2))), key2, iv2)


def test_rotation_into_a_clash(store, rng):
    keys = {name: (text(rng), text(rng)) for name in ("a", "b", "revoked")}
    for name, (key, iv) in keys.items():
        store.add(v1(name, key, iv))
    store.revoke("revoked")
    for target in ("b", "revoked"):
        key, iv = keys[target]
        secret = make_secret("v1", {"key": key, "iv": same_ident(rng, iv)})
        refused(target, lambda s=secret: store.rotate("a", s, grace=60), key, iv)
    # Its own current credential, or an older generation of its own: generations must stay apart
    # (a device still on the old IV tail would be served under the new one, values altered).
    key, iv = keys["a"]
    message = refused("a", lambda: store.rotate(
        "a", make_secret("v1", {"key": key, "iv": same_ident(rng, iv)}), grace=60), key, iv)
    assert "its own generation 1" in message
    store.rotate("a", make_secret("v1"), grace=60)
    message = refused("a", lambda: store.rotate(
        "a", make_secret("v1", {"key": key, "iv": iv}), grace=60), key, iv)
    assert "its own generation 1" in message
    # Nothing changed by the refusals: a has generations 1 and 2, nobody else moved.
    assert [c.generation for c in store.get("a").credentials] == [1, 2]
    assert [len(store.get(n).credentials) for n in ("b", "revoked")] == [1, 1]


def test_import_is_all_or_nothing_on_clashes(store, rng):
    key, iv = text(rng), text(rng)
    good = [v1(f"ok{n}", text(rng), text(rng)) for n in range(3)]
    # Two clashing entries inside one batch: the later one names the earlier one.
    batch = good[:2] + [v1("x", key, iv), good[2], v1("y", key, same_ident(rng, iv))]
    refused("x", lambda: store.import_many(batch), key, iv)
    assert store.list() == []
    # One entry clashing with a revoked device already in the store.
    store.add(v1("old", key, iv))
    store.revoke("old")
    refused("old", lambda: store.import_many(good + [v1("x", key, same_ident(rng, iv))]), key, iv)
    assert [d.id for d in store.list()] == ["old"]
    assert [d.id for d in store.import_many(good)] == ["ok0", "ok1", "ok2"]


def test_v2_credentials_do_not_take_part(store):
    for n in range(3):
        store.add(NewDevice(f"v2-{n}", "v2", make_secret("v2")))
    assert store.credential_clashes() == []


def bypass_check(store, monkeypatch) -> None:
    """What a store written before this check (or behind the store's back) may hold."""
    monkeypatch.setattr(store, "_check_clash", lambda *args: None)


def test_existing_clashes_are_reported_without_secrets(store, rng, monkeypatch):
    key, iv = text(rng), text(rng)
    key2, iv2 = text(rng), text(rng)
    store.add(v1("a", key, iv))
    store.add(v1("lone", text(rng), text(rng)))
    bypass_check(store, monkeypatch)
    store.add(v1("b", key, same_ident(rng, iv)))
    store.add(v1("c", key2, iv2))
    store.revoke("c")
    store.add(v1("d", key2, iv2))
    store.rotate("d", make_secret("v1", {"key": key2, "iv": iv2}), grace=60)  # its own twin generation
    clashes = store.credential_clashes()
    assert clashes == [[("a", 1), ("b", 1)], [("c", 1), ("d", 1), ("d", 2)]]
    assert not any(s in repr(clashes) for s in (key, iv, key2, iv2))


def behind_the_store(store_config, *statements: str) -> None:
    """SQL on the store's database, not through the store (a schema from before the ident column)."""
    if store_config.keystore_url:
        import psycopg

        with psycopg.connect(store_config.keystore_url, autocommit=True) as db:
            for sql in statements:
                db.execute(sql)
    else:
        import sqlite3

        db = sqlite3.connect(store_config.keystore_path)
        for sql in statements:
            db.execute(sql)
        db.commit()
        db.close()


def test_idents_of_an_older_store_are_filled_at_open(store_config, store, rng, monkeypatch):
    """A store from before the ident column: the column is added and filled from the sealed
    secrets at open, so the check and the report cover the old rows too."""
    key, iv = text(rng), text(rng)
    bypass_check(store, monkeypatch)
    store.add(v1("a", key, iv))
    store.add(v1("b", key, same_ident(rng, iv)))
    store.add(v1("c", text(rng), text(rng)))
    store.add(NewDevice("v2dev", "v2", make_secret("v2")))
    store.close()
    behind_the_store(store_config, "DROP INDEX credentials_ident",
                     "ALTER TABLE credentials DROP COLUMN ident")
    again = open_store(store_config)
    try:
        assert again.credential_clashes() == [[("a", 1), ("b", 1)]]
        refused("a", lambda: again.add(v1("z", key, iv)), key, iv)
        again.add(v1("z", text(rng), text(rng)))
    finally:
        again.close()
    # The column holds a keyed digest, never the key or IV.
    reopened = open_store(store_config)
    try:
        rows = reopened._read("SELECT ident FROM credentials")
        assert len(rows) == 5 and all(r[0] is None or (len(r[0]) == 64 and key not in r[0]) for r in rows)
        assert sum(r[0] is None for r in rows) == 1  # the v2 credential
    finally:
        reopened.close()
