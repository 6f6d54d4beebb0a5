"""Device ids (issue 14, item 7): one rule, `valid_device_id` in services/common/config.py, wherever
an id enters. `.` and `..` are path segments a URL client or a file path normalises away, so
ids made only of dots, and ids that start or end with a dot, are refused everywhere."""
from __future__ import annotations

import argparse
import json
import re

import pytest

from services.cli.cmd_station import _station_id
from services.common.config import DEVICE_ID_RE, valid_device_id
from services.common.state import admin_token, init_state
from services.keyadmin.app import create_app
from services.keyadmin.events import NoKeyEvents
from services.keystore.backends import open_store
from services.publisher.topics import BusMessageError, parse_ingest, status_message
from services.sim.registry import RegistryError, device_ids

DOTS = [".", "..", "...", "." * 64]
EDGE_DOTS = [".pico", "pico.", ".pico.", "..pico", "pico..", "./pico", "../pico", ".a", "a."]
OTHER_BAD = ["", "x" * 65, "a/b", "a b", "a+b", "a#b", "a%2e", "%2e%2e", "~unidentified", "é", "a\n", "a\x00",
             "a\\b", "a?b", "a:b", None, 7, ["a"], b"pico"]
GOOD = ["a", "0", "pico-1", "iot_med_dev_01", "a.b", "a..b", "v1.2.3", "-", "_", "a-", "-a", "x" * 64,
        "A.B-C_D", "1.0"]
BAD = DOTS + EDGE_DOTS + OTHER_BAD


@pytest.mark.parametrize("device", GOOD)
def test_good_ids(device):
    assert valid_device_id(device)


@pytest.mark.parametrize("device", BAD)
def test_bad_ids(device):
    assert not valid_device_id(device)


def test_the_openapi_pattern_is_the_same_rule():
    """The spec publishes DEVICE_ID_RE.pattern: an ECMA-262 regex (lookarounds), same verdicts."""
    for device in GOOD + [d for d in BAD if isinstance(d, str)]:
        assert (re.fullmatch(DEVICE_ID_RE.pattern, device) is not None) == valid_device_id(device), device


@pytest.fixture
def api(config):
    init_state(config)
    store = open_store(config)
    client = create_app(config, {"TESTING": True, "STORE": store, "EVENTS": NoKeyEvents()}).test_client()
    headers = {"Authorization": f"Bearer {admin_token(config)}"}

    def call(method: str, path: str, **kw):
        return getattr(client, method)(f"/api/v1{path}", headers={**headers, **kw.pop("headers", {})}, **kw)

    yield call
    store.close()


@pytest.mark.parametrize("device", DOTS + EDGE_DOTS)
def test_the_key_admin_api_refuses_them_on_add_import_and_stations(api, device):
    r = api("post", "/devices", json={"id": device, "protocol": "v1"})
    assert r.status_code == 400 and "device id" in r.json["error"]
    line = json.dumps({"id": device, "key": "1234567890123456", "iv": "AAAAAAAAAAAAAAAA"})
    r = api("post", "/devices/import", data=line, headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 400
    r = api("post", "/stations", json={"id": device, "public_key": "-----BEGIN PUBLIC KEY-----"})
    assert r.status_code == 400 and "id must be" in r.json["error"]
    assert api("get", "/devices").json["devices"] == []


def test_the_api_takes_good_ids_with_dots_inside(api):
    assert api("post", "/devices", json={"id": "a..b", "protocol": "v1"}).status_code == 201
    assert api("get", "/devices/a..b").status_code == 200


@pytest.mark.parametrize("device", DOTS + EDGE_DOTS)
def test_cli_sim_and_bus_refuse_them(device):
    with pytest.raises(argparse.ArgumentTypeError):
        _station_id(device)
    if not device.endswith("."):  # the sim appends digits: only a prefix can be refused
        with pytest.raises(RegistryError):
            device_ids(3, device)
    payload = json.dumps({"device": device, "ts": 1.0, "seq": 1, "protocol": "v2", "values": {},
                          "src": ["1.2.3.4", 1], "gw": ["1.2.3.4", 2], "uid": None}).encode()
    with pytest.raises(BusMessageError):
        parse_ingest(f"medsec/ingest/{device}", payload)
    assert status_message(f"medsec/events/{device}",
                          json.dumps({"event": "connect", "device": device}).encode()) is None
