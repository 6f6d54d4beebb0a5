"""Integrity of what decides whether a key may be used, on every backend.

A row edited in the database by someone without the master key (un-revoking a device,
extending an expired credential, resetting or deleting a v2 window, raising a token's scope)
is detected at the next read that uses it and refused; the audit chain cannot be recomputed
without the key. `tamper` writes to the database behind the store's back.
"""
from __future__ import annotations

import logging
import time

import pytest

from services.common.state import hash_token
from services.common.v2 import ReplayWindow
from services.keystore.audit import CHECKPOINT, GENESIS, audit_hash
from services.keystore.backends import open_store
from services.keystore.credentials import make_secret
from services.keystore.integrity import IntegrityFailed
from services.keystore.models import DeviceRevoked, NewDevice

KEY, IV = "1234567890123456", "AAAAAAAAAAAAAAAA"
FAR = 4102444800.0  # 2100-01-01


def v1(device_id: str, key: str = KEY, iv: str = IV) -> NewDevice:
    return NewDevice(device_id, "v1", make_secret("v1", {"key": key, "iv": iv}))


def usable(store, device_id: str) -> list[int]:
    """The generations of `device_id` that auth would accept now, on either protocol."""
    now = time.time()
    return [c.generation for p in ("v1", "v2") for c in store.credentials(p)
            if c.device_id == device_id and c.valid(now)]


def prepare(store, how: str) -> dict[str, str]:
    """Device d as an edit finds it: "added" (v1), "added_v2", "revoked", or "rotated" (generation 1
    expired at once); returns what the edit's SQL may name: {old_mac}, its MAC before revocation."""
    if how == "added_v2":
        store.add(NewDevice("d", "v2", make_secret("v2")))
        return {}
    store.add(v1("d"))
    if how == "revoked":
        [(old_mac,)] = store._read("SELECT mac FROM devices WHERE id = 'd'")
        store.revoke("d")
        return {"old_mac": old_mac}
    if how == "rotated":
        store.rotate("d", make_secret("v1"), grace=0)
    return {}


# name -> (device d before, the edit made behind the store's back)
EDITS = {
    "revoked_device": ("revoked", "UPDATE devices SET revoked_at = NULL WHERE id = 'd'"),
    # An older copy of the row, MAC and all (from a backup, or read before the revocation).
    "revocation_rolled_back": (
        "revoked", "UPDATE devices SET revoked_at = NULL, mac = '{old_mac}' WHERE id = 'd'"),
    "expired_credential": (
        "rotated", f"UPDATE credentials SET expires_at = {FAR} WHERE device_id = 'd' AND generation = 1"),
    "expired_credential_made_current": (
        "rotated", "UPDATE credentials SET expires_at = NULL WHERE device_id = 'd' AND generation = 1"),
    "protocol_downgraded": ("added_v2", "UPDATE devices SET protocol = 'v1' WHERE id = 'd'"),
    "mac_removed": ("revoked", "UPDATE devices SET revoked_at = NULL, mac = NULL WHERE id = 'd'"),
    "mac_copied_from_a_live_device": (
        "revoked", "UPDATE devices SET revoked_at = NULL,"
                   " mac = (SELECT mac FROM devices WHERE id = 'e') WHERE id = 'd'"),
    "confirmation_backdated": (
        "added", "UPDATE credentials SET created_at = created_at - 86400 WHERE device_id = 'd'"),
}


def edited(store, tamper, name: str) -> None:
    how, sql = EDITS[name]
    tamper(sql.format(**prepare(store, how)))


@pytest.mark.parametrize("edit", EDITS)
def test_a_row_edited_without_the_master_key_is_refused_at_the_next_use(store_config, store, tamper, edit,
                                                                        caplog):
    store.add(v1("e", key="e" * 16, iv="E" * 16))  # a bystander, left alone
    edited(store, tamper, edit)
    caplog.set_level(logging.ERROR, logger="medsec.keystore")
    fresh = open_store(store_config)  # nothing cached: what a restarted auth or keyadmin sees
    try:
        assert usable(fresh, "d") == []
        device = fresh.get("d")
        assert device.state() == "integrity_failed" and device.to_json()["integrity"] == "failed"
        assert {d.id: d.state() for d in fresh.list()} == {"d": "integrity_failed", "e": "active"}
        assert usable(fresh, "e") == [1]
        assert fresh.integrity_failures.count >= 1
        assert "event=integrity_failed" in caplog.text and "device=d" in caplog.text
        # The store's own writes never launder the edit: a rotation is refused or leaves the
        # device as unusable as before.
        try:
            fresh.rotate("d", make_secret(device.protocol), grace=0)
        except (IntegrityFailed, DeviceRevoked):
            pass
        fresh.confirm("d", 1)
        assert usable(fresh, "d") == [] and fresh.get("d").state() == "integrity_failed"
    finally:
        fresh.close()


def test_failures_are_logged_once_per_row_state(store_config, store, tamper, caplog):
    edited(store, tamper, "revoked_device")
    caplog.set_level(logging.ERROR, logger="medsec.keystore")
    store.credentials("v1")
    store.get("d")
    first = store.integrity_failures.count
    assert first >= 1 and caplog.text.count("event=integrity_failed") == first
    for _ in range(3):
        store.credentials("v1")
        store.get("d")
    assert caplog.text.count("event=integrity_failed") == first == store.integrity_failures.count


def test_revoking_a_tampered_device_makes_it_revoked_and_whole_again(store, tamper):
    edited(store, tamper, "revoked_device")
    assert store.get("d").state() == "integrity_failed"
    store.revoke("d")
    assert store.get("d").state() == "revoked" and usable(store, "d") == []


def test_honest_writes_keep_every_row_whole(store):
    store.add(v1("d"))
    store.rotate("d", make_secret("v1"), grace=3600)
    store.confirm("d", 2)
    store.add(NewDevice("w", "v2", make_secret("v2")))
    store.revoke("w")
    assert {d.id: d.to_json()["integrity"] for d in store.list()} == {"d": "ok", "w": "ok"}
    assert usable(store, "d") == [2]
    assert store.integrity_failures.count == 0


def _v2_device(store) -> str:
    secret = make_secret("v2")
    store.add(NewDevice("w", "v2", secret))
    return secret["key_id"]


@pytest.mark.parametrize("edit", [
    """UPDATE v2_windows SET "window" = '1:1:1' WHERE key_id = '{kid}'""",  # reset: old seqs pass again
    """UPDATE v2_windows SET "window" = '0:0:0' WHERE key_id = '{kid}'""",
    """UPDATE v2_windows SET "window" = '999999:1:1' WHERE key_id = '{kid}'""",  # pushed ahead
    """UPDATE v2_windows SET device_id = 'other' WHERE key_id = '{kid}'""",
    """DELETE FROM v2_windows WHERE key_id = '{kid}'""",  # deleted: would start afresh
], ids=["reset", "zeroed", "pushed-ahead", "relabelled", "deleted"])
def test_a_v2_window_edited_in_the_database_is_refused(store_config, store, tamper, edit):
    kid = _v2_device(store)
    window = ReplayWindow()
    window.accept(40)
    assert store.advance_v2_window(kid, "w", window.to_text(), "0:0:0")
    assert store.v2_window(kid) == window.to_text()
    tamper(edit.format(kid=kid))
    fresh = open_store(store_config)
    try:
        with pytest.raises(IntegrityFailed) as caught:
            fresh.v2_window(kid)
        assert caught.value.device in ("w", "other") and fresh.integrity_failures.count == 1
    finally:
        fresh.close()


def test_v2_windows_verify_from_registration_through_acks(store):
    kid = _v2_device(store)
    assert store.v2_window(kid) == "0:0:0"
    window = ReplayWindow()
    window.accept(1)
    assert store.advance_v2_window(kid, "w", window.to_text(), "0:0:0")
    window.ack(1)
    assert store.save_v2_window(kid, "w", window.to_text())
    assert store.v2_window(kid) == window.to_text()
    assert store.v2_window("00000000") is None  # an unknown key id is no integrity failure


@pytest.mark.parametrize("edit, presented", [
    ("UPDATE tokens SET scope = 'admin' WHERE name = 't'", "t-value"),
    ("UPDATE tokens SET revoked_at = NULL WHERE name = 'r'", "r-value"),
    ("UPDATE tokens SET hash = '{forged}' WHERE name = 't'", "forged"),
    ("INSERT INTO tokens(name, scope, hash, created_at, revoked_at, mac)"
     " SELECT 'x', 'admin', '{forged}', created_at, NULL, mac FROM tokens WHERE name = 't'", "forged"),
], ids=["scope-raised", "unrevoked", "value-replaced", "minted"])
def test_a_token_edited_in_the_database_is_refused(store, tamper, edit, presented):
    store.add_token("t", "read", hash_token("t-value"), actor="test")
    store.add_token("r", "admin", hash_token("r-value"), actor="test")
    store.revoke_token("r", actor="test")
    assert store.token_by_hash(hash_token("t-value")).intact
    tamper(edit.format(forged=hash_token("forged")))
    token = store.token_by_hash(hash_token(presented))
    assert token is not None and not token.intact  # keyadmin answers 401 (tests/keyadmin)
    assert store.integrity_failures.count == 1


# --- the audit chain ---

def _rewrite_chain(store, tamper, key: bytes | None, actor: str = "mallory") -> None:
    """Edit every entry's actor and recompute the whole chain with `key` (None: plain SHA-256)."""
    prev, sqls = GENESIS, []
    for e in store.audit():
        digest = audit_hash(key, prev, e.seq, e.ts, actor, e.action, e.device, e.detail)
        sqls.append(f"UPDATE audit SET actor = '{actor}', prev = '{prev}', hash = '{digest}'"
                    f" WHERE seq = {e.seq}")
        prev = digest
    tamper(*sqls)


@pytest.mark.parametrize("key", [None, b"k" * 32], ids=["plain-sha256", "wrong-key"])
def test_a_recomputed_audit_chain_fails_verification(store, tamper, key):
    store.add(v1("d"))
    store.revoke("d")
    entries, broken = store.verify_audit()
    assert len(entries) == 2 and broken is None
    _rewrite_chain(store, tamper, key)
    entries, broken = store.verify_audit()
    assert [e.actor for e in entries] == ["mallory"] * 2
    assert broken is not None and broken.entry.seq == 1 and "key" in broken.reason


def test_an_unkeyed_log_is_anchored_once_by_a_keyed_checkpoint(store_config, store, tamper):
    """A store from before row MACs and the keyed chain (simulated: MAC columns dropped, the chain
    recomputed in plain SHA-256, as the old code wrote it) is upgraded at open, once."""
    store.add(v1("d"))
    store.add(NewDevice("w", "v2", make_secret("v2")))
    store.revoke("d")
    _rewrite_chain(store, tamper, None, actor="admin@127.0.0.1")
    tamper(*[f"ALTER TABLE {t} DROP COLUMN mac" for t in ("devices", "credentials", "v2_windows")])
    store.close()
    upgraded = open_store(store_config)
    try:
        entries, broken = upgraded.verify_audit()
        assert broken is None and [e.action for e in entries][-1] == CHECKPOINT
        assert entries[-1].detail == {"anchors": 3} and entries[-1].prev == entries[2].hash
        assert {d.id: d.state() for d in upgraded.list()} == {"d": "revoked", "w": "active"}
        # Editing an old (unkeyed) entry breaks the link to the checkpoint.
        tamper("UPDATE audit SET action = 'renamed' WHERE seq = 1")
        assert upgraded.verify_audit()[1].entry.seq == 1
        tamper("UPDATE audit SET action = 'added' WHERE seq = 1",
               "UPDATE devices SET mac = NULL WHERE id = 'w'")
    finally:
        upgraded.close()
    again = open_store(store_config)  # MACs are filled in only by the upgrade that adds them
    try:
        assert again.get("w").state() == "integrity_failed"
        assert [e.action for e in again.audit()].count(CHECKPOINT) == 1
    finally:
        again.close()
