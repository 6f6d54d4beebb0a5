"""The dynamic-security renderer (pure) and its admin client's edges; the real-broker checks are in
tests/deploy/test_mosquitto_policy.py and tests/dispatch/test_security.py."""
from __future__ import annotations

import base64
import hashlib
import json

import pytest

from services.broker import BrokerError, dynsec, dynsec_admin
from services.broker.mosquitto import write_broker_files
from services.common.config import Config
from services.common.state import init_state

LOGINS = {"dashboard": "dash-pw-0123456789", "station-s1": "s1-pw-0123456789"}


def test_config_holds_pbkdf2_hashes_with_per_login_salts_and_no_password():
    doc = dynsec.config(LOGINS)
    text = json.dumps(doc)
    assert all(pw not in text for pw in LOGINS.values())
    clients = {c["username"]: c for c in doc["clients"]}
    assert set(clients) == set(LOGINS)
    for user, c in clients.items():
        salt = base64.b64decode(c["salt"])
        expect = hashlib.pbkdf2_hmac("sha512", LOGINS[user].encode(), salt, c["iterations"])
        assert base64.b64decode(c["password"]) == expect
        assert c["roles"] == [{"rolename": user}]
    assert clients["dashboard"]["salt"] != clients["station-s1"]["salt"]


def test_default_access_denies_everything_but_unsubscribe():
    assert dynsec.config(LOGINS)["defaultACLAccess"] == {
        "publishClientSend": False, "publishClientReceive": False, "subscribe": False, "unsubscribe": True}


def test_station_role_names_only_its_own_topics():
    roles = {r["rolename"]: r["acls"] for r in dynsec.config(LOGINS)["roles"]}
    acls = {(a["acltype"], a["topic"]) for a in roles["station-s1"]}
    base = "medsec/dispatch/station-s1"
    assert {t for kind, t in acls if kind == "publishClientSend"} == {f"{base}/request", f"{base}/result"}
    readable = {f"{base}/{leaf}" for leaf in ("params", "verdict", "go")}
    assert {t for kind, t in acls if kind == "publishClientReceive"} == readable
    shared = {f"$share/+/{t}" for t in readable}
    assert {t for kind, t in acls if kind == "subscribePattern"} == readable | shared
    assert all(a["allow"] for a in roles["station-s1"]) and "%u" not in json.dumps(roles)


def test_create_commands_give_a_running_broker_what_the_file_gives_a_new_one():
    role, client = dynsec.create_commands("station-s1", "pw-0123456789")
    from_file = {r["rolename"]: r["acls"] for r in dynsec.config(LOGINS)["roles"]}
    assert role == {"command": "createRole", "rolename": "station-s1", "acls": from_file["station-s1"]}
    assert client["command"] == "createClient" and client["roles"] == [{"rolename": "station-s1"}]
    assert [c["command"] for c in dynsec.delete_commands("station-s1")] == ["deleteClient", "deleteRole"]


def test_only_real_refusals_count_as_failures():
    responses = [{"command": "createClient", "error": "Client already exists"},
                 {"command": "deleteRole", "error": "Role not found"},
                 {"command": "createRole"},
                 {"command": "createClient", "error": "Invalid/missing password"}]
    assert dynsec_admin.refused(responses) == ["createClient: Invalid/missing password"]


def test_no_broker_listening_means_the_file_applies_at_its_next_start(config):
    init_state(config)  # nothing listens on the fixture's free mqtt_port
    assert dynsec_admin.send(config, dynsec.delete_commands("station-x"), timeout=2) is False


def test_missing_plugin_is_a_clear_error(config):
    env = {**config.to_env(), "MEDSEC_MOSQUITTO_DYNSEC": "/nonexistent/mosquitto_dynamic_security.so"}
    config = Config.from_env(env)
    init_state(config)
    with pytest.raises(BrokerError, match="MEDSEC_MOSQUITTO_DYNSEC"):
        write_broker_files(config)
