"""Issue 14 item 1 at the key-admin API: credentials v1 identification could confuse are refused
(409 naming the device it clashes with, never a secret), and a store that already holds some
says so at start (log line, audit entry, metric)."""
from __future__ import annotations

import logging

import pytest

from services.common.state import admin_token
from services.keyadmin.app import create_app
from services.keyadmin.events import NoKeyEvents
from services.keystore.credentials import make_secret
from services.keystore.models import NewDevice

KEY, IV = "Key-0123456789ab", "IV-0123456789abc"
TWIN = IV[:9] + "XYZ-_!#"  # same first 9 characters, other tail


@pytest.fixture
def events():
    return NoKeyEvents()


@pytest.fixture
def api(state, store, events):
    """The production app on the test's store, called with the admin token."""
    client = create_app(state, {"TESTING": True, "STORE": store, "EVENTS": events}).test_client()
    token = admin_token(state)

    class Api:
        def __getattr__(self, method):
            def call(path, **kw):
                return getattr(client, method)(f"/api/v1{path}", headers={"Authorization": f"Bearer {token}"},
                                               **kw)
            return call

    return Api()


def metrics(app) -> str:
    return app.test_client().get("/api/v1/metrics").get_data(as_text=True)


def assert_clash(r, device: str) -> None:
    assert r.status_code == 409, r.json
    assert f"clashes with device {device} " in r.json["error"]
    body = r.get_data(as_text=True)
    assert KEY not in body and IV[:9] not in body and TWIN not in body


@pytest.mark.parametrize("iv", [IV, TWIN])
def test_add_refused_while_any_credential_shares_key_and_iv_head(api, iv):
    assert api.post("/devices", json={"id": "first", "key": KEY, "iv": IV}).status_code == 201
    assert_clash(api.post("/devices", json={"id": "second", "key": KEY, "iv": iv}), "first")
    assert api.delete("/devices/first").status_code == 200
    assert_clash(api.post("/devices", json={"id": "second", "key": KEY, "iv": iv}), "first")
    assert api.get("/devices/second").status_code == 404
    # A different key, or a different IV head, is another identity.
    assert api.post("/devices", json={"id": "k", "key": "k" + KEY[1:], "iv": iv}).status_code == 201
    assert api.post("/devices", json={"id": "i", "key": KEY, "iv": IV[:8] + "~" + IV[9:]}).status_code == 201


def test_rotation_into_a_clash_refused(api):
    api.post("/devices", json={"id": "a", "key": KEY, "iv": IV})
    api.post("/devices", json={"id": "b"})
    assert_clash(api.post("/devices/b/rotate", json={"key": KEY, "iv": TWIN, "grace": 60}), "a")
    # Into its own credential (the current one, or a previous generation).
    assert_clash(api.post("/devices/a/rotate", json={"key": KEY, "iv": TWIN}), "a")
    assert api.post("/devices/a/rotate", json={"grace": 60}).status_code == 201
    assert_clash(api.post("/devices/a/rotate", json={"key": KEY, "iv": IV}), "a")
    assert [len(api.get(f"/devices/{d}").json["credentials"]) for d in ("a", "b")] == [2, 1]


def test_import_with_clashing_entries_imports_nothing(api):
    lines = [f'{{"id":"imp-{n}","key":"{make_secret("v1")["key"]}","iv":"{IV}"}}' for n in range(3)]
    lines.insert(1, f'{{"id":"dup-a","key":"{KEY}","iv":"{IV}"}}')
    lines.append(f'{{"id":"dup-b","key":"{KEY}","iv":"{TWIN}"}}')
    r = api.post("/devices/import", data="\n".join(lines))
    assert_clash(r, "dup-a")
    assert "dup-b" in r.json["error"]
    assert api.get("/devices").json["devices"] == []


def test_start_reports_existing_clashes(state, store, events, monkeypatch, caplog):
    monkeypatch.setattr(store, "_check_clash", lambda *args: None)
    store.add(NewDevice("a", "v1", {"key": KEY, "iv": IV}))
    store.add(NewDevice("b", "v1", {"key": KEY, "iv": TWIN}))
    store.add(NewDevice("c", "v1", make_secret("v1")))
    caplog.set_level(logging.WARNING, "medsec.keyadmin")
    app = create_app(state, {"TESTING": True, "STORE": store, "EVENTS": events})
    [line] = [r.getMessage() for r in caplog.records if "event=credential_clash" in r.getMessage()]
    assert "devices=a,b " in line and "credentials=a:1,b:1 " in line
    assert KEY not in line and IV not in line
    [entry] = [e for e in store.audit() if e.action == "credential_clash"]  # once per start
    assert entry.actor == "keyadmin"
    assert entry.detail == {"groups": [["a:1", "b:1"]]}
    assert "medsec_keyadmin_credential_clashes 1" in metrics(app)


def test_no_clash_no_report(state, store, events, caplog):
    store.add(NewDevice("a", "v1", make_secret("v1")))
    caplog.set_level(logging.WARNING, "medsec.keyadmin")
    app = create_app(state, {"TESTING": True, "STORE": store, "EVENTS": events})
    assert not [r for r in caplog.records if "credential_clash" in r.getMessage()]
    # What start writes besides: the generated service tokens' registration (token_registered).
    assert [e.action for e in store.audit() if e.action != "token_registered"] == ["added"]
    assert "medsec_keyadmin_credential_clashes 0" in metrics(app)
