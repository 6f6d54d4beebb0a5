"""The key store contract; runs against every backend (tests/support/stores.py BACKENDS)."""
from __future__ import annotations

import os

import pytest

from services.common.state import StateError
from services.keystore.audit import verify_chain
from services.keystore.backends import open_store
from services.keystore.credentials import CredentialError, make_secret
from services.keystore.models import (
    CredentialsInUse,
    DeviceExists,
    DeviceNotFound,
    DeviceRevoked,
    NewDevice,
    Seen,
    StationExists,
    StationNotFound,
)
from services.keystore.sealing import Sealer, SealError
from services.keystore.sqlite import SQLiteKeyStore

KEY, IV = "1234567890123456", "AAAAAAAAAAAAAAAA"


def v1(device_id: str, key: str = KEY, iv: str = IV) -> NewDevice:
    return NewDevice(device_id, "v1", make_secret("v1", {"key": key, "iv": iv}))


def test_add_get_list_never_expose_secrets(store):
    device = store.add(v1("pico-1"))
    assert device.id == "pico-1" and device.protocol == "v1" and device.state() == "active"
    assert store.get("pico-1") == device
    assert [d.id for d in store.list()] == ["pico-1"]
    assert store.get("nope") is None
    text = repr(device.to_json()) + repr(store.list())
    assert KEY not in text and IV not in text


def test_credentials_unsealed_for_auth(store):
    store.add(v1("pico-1"))
    creds = store.credentials("v1")
    assert [(c.device_id, c.generation, c.secret) for c in creds] == [("pico-1", 1, {"key": KEY, "iv": IV})]
    assert creds[0].valid(0)


def test_duplicate_id_and_shared_credentials_refused(store):
    store.add(v1("pico-1"))
    with pytest.raises(DeviceExists):
        store.add(v1("pico-1", key="x" * 16))
    with pytest.raises(CredentialsInUse):
        store.add(v1("pico-2"))
    # Same key, other IV is a different identity (block 0 differs).
    store.add(v1("pico-3", iv="B" * 16))


def test_secrets_sealed_at_rest(store, state):
    store.add(v1("pico-1"))
    raw = b"".join(p.read_bytes() for p in state.home.glob("keys.db*"))
    assert KEY.encode() not in raw and IV.encode() not in raw
    for path in state.home.glob("keys.db*"):
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_sealed_row_moved_to_another_device_does_not_open(state):
    sealer = Sealer(os.urandom(32))
    blob = sealer.seal("a", "v1", {"key": KEY, "iv": IV})
    assert sealer.unseal("a", "v1", blob) == {"key": KEY, "iv": IV}
    with pytest.raises(SealError):
        sealer.unseal("b", "v1", blob)
    with pytest.raises(SealError):
        sealer.unseal("a", "v2", blob)
    with pytest.raises(SealError):
        Sealer(os.urandom(32)).unseal("a", "v1", blob)


def test_revoke(store):
    store.add(v1("pico-1"))
    device = store.revoke("pico-1")
    assert device.state() == "revoked" and device.revoked_at
    assert store.credentials("v1")[0].revoked
    with pytest.raises(DeviceRevoked):
        store.revoke("pico-1")
    with pytest.raises(DeviceNotFound):
        store.revoke("ghost")
    # A revoked device's credentials still block a new registration: a reading of the revoked
    # device would be identified as the new one (tests/keystore/test_clashes.py).
    with pytest.raises(CredentialsInUse, match="clashes with device pico-1"):
        store.add(v1("pico-2"))


def test_import_is_all_or_nothing(store):
    store.add(v1("old"))
    batch = [v1("a", key="a" * 16), v1("old", key="b" * 16), v1("c", key="c" * 16)]
    with pytest.raises(DeviceExists):
        store.import_many(batch)
    assert [d.id for d in store.list()] == ["old"]
    imported = store.import_many([v1("a", key="a" * 16), v1("c", key="c" * 16)])
    assert [d.id for d in imported] == ["a", "c"]


def test_rotation_overlap_and_confirm(store):
    t = [1000.0]
    store._clock = lambda: t[0]
    store.add(v1("pico-1"))
    new = make_secret("v1")
    device = store.rotate("pico-1", new, grace=3600)
    assert device.state(t[0]) == "rotating"
    states = [c["state"] for c in device.to_json(t[0])["credentials"]]
    assert states == ["previous", "current"]
    valid = {c.generation: c.valid(t[0]) for c in store.credentials("v1")}
    assert valid == {1: True, 2: True}
    assert {c.generation: c.valid(t[0] + 3601) for c in store.credentials("v1")} == {1: False, 2: True}
    store.confirm("pico-1", 2)
    assert {c.generation: c.valid(t[0] + 1) for c in store.credentials("v1")} == {1: False, 2: True}
    assert store.get("pico-1").state(t[0] + 1) == "active"


def test_rotate_refuses_unknown_and_revoked(store):
    with pytest.raises(DeviceNotFound):
        store.rotate("ghost", make_secret("v1"), 10)
    store.add(v1("pico-1"))
    store.revoke("pico-1")
    with pytest.raises(DeviceRevoked):
        store.rotate("pico-1", make_secret("v1"), 10)


def test_record_seen_batches(store):
    store.add(v1("pico-1"))
    store.record_seen({"pico-1": Seen(last_seen=5.0, readings=3, rejected=1, connections=1)})
    store.record_seen({"pico-1": Seen(last_seen=4.0, readings=2), "ghost": Seen(readings=1)})
    device = store.get("pico-1")
    assert (device.last_seen, device.readings, device.rejected, device.connections) == (5.0, 5, 1, 1)


def test_generation_changes_when_another_process_writes(store_config, store):
    other = open_store(store_config)
    before = store.generation()
    assert store.generation() == before
    other.add(v1("pico-1"))
    assert store.generation() != before
    other.close()


def test_audit_chain_detects_edits(store, tamper):
    store.add(v1("pico-1"))
    store.revoke("pico-1")
    entries = store.audit()
    assert [e.action for e in entries] == ["added", "revoked"]
    assert verify_chain(entries, store._sealer.audit_key) is None
    with pytest.raises(Exception, match="append-only"):
        store._db.execute("UPDATE audit SET actor = 'mallory'")
    tamper("UPDATE audit SET actor = 'mallory' WHERE seq = 1")
    assert verify_chain(store.audit(), store._sealer.audit_key).entry.seq == 1


def test_audit_head_is_the_newest_entry(store):
    assert store.audit_head() is None
    store.add(v1("pico-1"))
    store.revoke("pico-1")
    last = store.audit()[-1]
    assert store.audit_head() == (2, last.hash) and last.seq == 2


def test_refuses_wide_permissions(state):
    SQLiteKeyStore.open(state).close()
    os.chmod(state.keystore_path, 0o644)
    with pytest.raises(StateError, match="0600"):
        SQLiteKeyStore.open(state)
    os.chmod(state.keystore_path, 0o600)
    os.chmod(state.master_key_path, 0o640)
    with pytest.raises(StateError, match="0600"):
        SQLiteKeyStore.open(state)


@pytest.mark.parametrize("fields, message", [
    ({"key": "short"}, "key must be exactly 16"),
    ({"iv": "é" * 16}, "iv must be exactly 16"),
    ({"key": 1234567890123456}, "key must be a string"),
])
def test_v1_credentials_validated(fields, message):
    with pytest.raises(CredentialError, match=message):
        make_secret("v1", fields)


def test_v1_credentials_generated():
    a, b = make_secret("v1"), make_secret("v1")
    assert len(a["key"]) == len(a["iv"]) == 16 and a != b
    assert all(0x20 < ord(c) < 0x7F for c in a["key"] + a["iv"])


def test_credentials_changed_names_only_changed_devices(store):
    store.add(v1("a", key="a" * 16))
    store.add(v1("b", key="b" * 16))
    everything, mark = store.credentials_changed("v1", -1)
    assert {c.device_id for c in everything} == {"a", "b"}
    assert store.credentials_changed("v1", mark) == ([], mark)
    store.rotate("a", make_secret("v1"), grace=60)
    changed, mark2 = store.credentials_changed("v1", mark)
    assert mark2 > mark and sorted((c.device_id, c.generation) for c in changed) == [("a", 1), ("a", 2)]
    store.revoke("b")
    changed, mark3 = store.credentials_changed("v1", mark2)
    assert [(c.device_id, c.revoked) for c in changed] == [("b", True)]
    store.confirm("a", 2)
    changed, _ = store.credentials_changed("v1", mark3)
    assert {c.device_id for c in changed} == {"a"}


PEM_A, PEM_B = "-----BEGIN PUBLIC KEY-----\nA\n", "-----BEGIN PUBLIC KEY-----\nB\n"


def test_stations_add_show_list(store):
    assert store.stations() == []
    added = store.add_station("s2", PEM_A, "SHA256:aa")
    assert (added.id, added.public_key, added.fingerprint) == ("s2", PEM_A, "SHA256:aa")
    assert added.revoked_at is None
    assert added.created_at > 0 and store.station("s2") == added
    store.add_station("S1", PEM_B, "SHA256:bb")
    store.add_station("s1", PEM_B, "SHA256:cc")
    # Byte order on every backend (upper case first), as devices are listed.
    assert [s.id for s in store.stations()] == ["S1", "s1", "s2"]
    assert added.to_json() == {"id": "s2", "fingerprint": "SHA256:aa", "public_key": PEM_A,
                               "created_at": added.created_at, "revoked_at": None}


def test_station_ids_are_unique_while_active(store):
    store.add_station("s1", PEM_A, "SHA256:aa")
    with pytest.raises(StationExists, match="station 's1' is already registered; revoke it first"):
        store.add_station("s1", PEM_B, "SHA256:bb")
    assert store.station("s1").public_key == PEM_A


def test_station_revoke_then_register_again(store):
    store.add_station("s1", PEM_A, "SHA256:aa")
    revoked = store.revoke_station("s1")
    assert revoked.revoked_at is not None and store.station("s1").revoked_at == revoked.revoked_at
    assert store.stations() == []  # listed: active stations only
    with pytest.raises(StationNotFound, match="no active station 's1'"):
        store.revoke_station("s1")
    again = store.add_station("s1", PEM_B, "SHA256:bb")
    assert (again.public_key, again.fingerprint, again.revoked_at) == (PEM_B, "SHA256:bb", None)
    assert [s.id for s in store.stations()] == ["s1"]


def test_unknown_station(store):
    with pytest.raises(StationNotFound, match="no station 'nope'"):
        store.station("nope")
    with pytest.raises(StationNotFound, match="no active station 'nope'"):
        store.revoke_station("nope")


def test_stations_are_seen_by_every_instance_on_the_store(store_config, store):
    other = open_store(store_config)
    other.add_station("s1", PEM_A, "SHA256:aa")
    assert [s.id for s in store.stations()] == ["s1"]
    store.revoke_station("s1")
    assert other.station("s1").revoked_at is not None
    other.close()


def test_reopening_keeps_everything(store_config, store):
    """The schema migration is idempotent: a second open of the same database changes nothing."""
    store.add(v1("pico-1"))
    store.add_station("s1", PEM_A, "SHA256:aa")
    mark = store.credentials_changed("v1", -1)[1]
    again = open_store(store_config)
    assert [d.id for d in again.list()] == ["pico-1"] and again.station("s1").public_key == PEM_A
    assert again.credentials_changed("v1", -1)[1] == mark
    assert [e.action for e in again.audit()] == ["added"]
    again.close()


def test_an_older_sqlite_file_is_migrated(state):
    """A keys.db from before change stamps, with stations written by the old stations API."""
    import sqlite3

    db = sqlite3.connect(state.keystore_path)
    db.executescript(
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema', '1');"
        "CREATE TABLE devices (id TEXT PRIMARY KEY, protocol TEXT NOT NULL, created_at REAL NOT NULL,"
        " revoked_at REAL, last_seen REAL, readings INTEGER NOT NULL DEFAULT 0,"
        " rejected INTEGER NOT NULL DEFAULT 0, connections INTEGER NOT NULL DEFAULT 0);"
        "CREATE TABLE dispatch_stations (id TEXT PRIMARY KEY, public_key TEXT NOT NULL,"
        " fingerprint TEXT NOT NULL, created_at REAL NOT NULL, revoked_at REAL);"
        "INSERT INTO dispatch_stations VALUES ('s1', 'pem', 'SHA256:aa', 1.0, NULL);")
    db.close()
    os.chmod(state.keystore_path, 0o600)
    store = SQLiteKeyStore.open(state)
    assert store.station("s1").fingerprint == "SHA256:aa"
    store.add(v1("pico-1"))
    creds, mark = store.credentials_changed("v1", -1)
    assert [c.device_id for c in creds] == ["pico-1"] and mark == 1
    assert store.credentials_changed("v1", mark) == ([], mark)
    store.close()
