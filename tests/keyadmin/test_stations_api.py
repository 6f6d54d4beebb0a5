"""The stations API on the configured key store (SQLite or PostgreSQL): store errors become HTTP answers."""
from __future__ import annotations

import pytest

from services.common import envelope
from services.common.state import admin_token
from services.dispatch.keys import generate_key
from services.keyadmin.app import create_app
from services.keyadmin.events import NoKeyEvents
from services.keyadmin.stations_api import fingerprint
from services.keystore.backends import open_store


@pytest.fixture(scope="module")
def pem() -> str:
    return envelope.public_pem(generate_key())


@pytest.fixture
def api(store_config):
    """The app as production builds it: it opens the store MEDSEC_KEYSTORE_URL names."""
    app = create_app(store_config, {"TESTING": True, "EVENTS": NoKeyEvents()})
    client = app.test_client()
    headers = {"Authorization": f"Bearer {admin_token(store_config)}"}
    yield lambda method, path, **kw: getattr(client, method)(f"/api/v1{path}", headers=headers, **kw)
    app.extensions["medsec.store"].close()


def test_stations_live_in_the_configured_store(api, store, pem):
    store.add_station("s1", pem, fingerprint(pem))
    listed = api("get", "/stations")
    assert listed.status_code == 200 and [s["id"] for s in listed.json["stations"]] == ["s1"]
    shown = api("get", "/stations/s1")
    assert shown.status_code == 200 and shown.json["public_key"] == pem
    assert shown.json["fingerprint"] == fingerprint(pem) and shown.json["revoked_at"] is None
    revoked = api("delete", "/stations/s1")
    assert revoked.status_code == 200 and revoked.json["revoked_at"] is not None
    assert store.station("s1").revoked_at == revoked.json["revoked_at"]
    assert [e.action for e in store.audit()][-1:] == ["station_revoked"]
    assert api("get", "/stations").json == {"stations": []}


def test_store_errors_become_http_answers(api, store, pem):
    store.add_station("s1", pem, fingerprint(pem))
    again = api("post", "/stations", json={"id": "s1", "public_key": pem})
    assert again.status_code == 409
    assert again.json == {"error": "station 's1' is already registered; revoke it first"}
    missing = api("get", "/stations/nope")
    assert missing.status_code == 404 and missing.json == {"error": "no station 'nope'"}
    assert api("delete", "/stations/s1").status_code == 200
    for station in ("nope", "s1"):  # never registered, already revoked
        gone = api("delete", f"/stations/{station}")
        assert gone.status_code == 404 and gone.json == {"error": f"no active station {station!r}"}


def test_a_second_store_instance_sees_the_api_s_changes(api, store_config, pem):
    other = open_store(store_config)
    other.add_station("s2", pem, fingerprint(pem))
    assert api("get", "/stations/s2").status_code == 200
    assert api("delete", "/stations/s2").status_code == 200
    assert other.stations() == []
    other.close()
