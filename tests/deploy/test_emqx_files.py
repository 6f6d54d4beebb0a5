"""The EMQX files say what Mosquitto's dynamic-security config says (parse both, same answers),
and the hashes check."""
from __future__ import annotations

import hashlib
import json

import pytest

from services.broker import dynsec, emqx
from services.common.mqttclient import BROKER_INFLIGHT
from tests.deploy.acl_eval import DynsecAcl, EmqxAcl, parse_erlang_terms
from tests.deploy.policy_cases import CASES, TOPICS, USERS

MOSQ = DynsecAcl(json.dumps(dynsec.config({u: "pw" for u in USERS})))
EMQX = EmqxAcl(emqx.acl_conf())


@pytest.mark.parametrize("user, topic, action, expected", CASES)
def test_both_formats_follow_the_policy_table(user, topic, action, expected):
    assert MOSQ.allowed(user, topic, action) is expected, "mosquitto dynamic security"
    assert EMQX.allowed(user, topic, action) is expected, "emqx acl.conf"


def test_formats_agree_on_every_user_topic_action():
    disagreements = [(u, t, a) for u in USERS for t in TOPICS for a in ("publish", "subscribe")
                     if MOSQ.allowed(u, t, a) != EMQX.allowed(u, t, a)]
    assert disagreements == []
    # The cross product is not vacuous: both allow some and deny some.
    answers = {EMQX.allowed(u, t, a) for u in USERS for t in TOPICS for a in ("publish", "subscribe")}
    assert answers == {True, False}


def test_acl_conf_ends_in_deny_all_and_has_no_superuser_escape():
    terms = parse_erlang_terms(emqx.acl_conf())
    assert terms[-1] == (terms[-1][0], terms[-1][1]) and terms[-1][0].name == "deny"
    assert terms[-1][1].name == "all"
    assert all(t[0].name == "allow" for t in terms[:-1])
    assert "{allow, all}." not in emqx.acl_conf()


def test_evaluator_catches_a_wrong_rule():
    """The equivalence test can fail: a policy with one extra right disagrees."""
    from services.common.accounts import POLICY, Rule
    wider = EmqxAcl(emqx.acl_conf(POLICY + (Rule("dashboard", "write", "Pico/#"),)))
    assert wider.allowed("dashboard", "Pico/pico-1/json", "publish")
    assert not MOSQ.allowed("dashboard", "Pico/pico-1/json", "publish")


def test_bootstrap_csv_holds_pbkdf2_hashes_not_passwords():
    passwords = {"proxy": "pw-proxy-0123456789", "dashboard": "pw-dash-0123456789"}
    text = emqx.bootstrap_csv(passwords)
    lines = text.splitlines()
    assert lines[0] == "user_id,password_hash,salt,is_superuser"
    rows = {r.split(",")[0]: r.split(",")[1:] for r in lines[1:]}
    assert set(rows) == {"proxy", "dashboard"}
    for user, (digest, salt, superuser) in rows.items():
        assert superuser == "false"
        assert passwords[user] not in text
        # What EMQX computes: pbkdf2(mac_fun, password, salt bytes, iterations) as lower-case hex.
        expect = hashlib.pbkdf2_hmac("sha256", passwords[user].encode(), salt.encode(), 4096).hex()
        assert digest == expect
    assert rows["proxy"][1] != rows["dashboard"][1], "salts are per account"


def test_bootstrap_refuses_names_that_break_csv():
    with pytest.raises(ValueError):
        emqx.bootstrap_csv({"a,b": "x"})


def test_emqx_conf_points_at_the_generated_files_and_matches_the_hash():
    conf = emqx.emqx_conf()
    assert f'bootstrap_file = "{emqx.ETC}/{emqx.BOOTSTRAP_NAME}"' in conf
    assert "bootstrap_type = hash" in conf
    assert f'path = "{emqx.ETC}/{emqx.ACL_NAME}"' in conf
    assert f"iterations = {emqx.PBKDF2_ITERATIONS}" in conf and "mac_fun = sha256" in conf
    assert "no_match = deny" in conf
    # The publisher's QoS 2 window fits: EMQX drops QoS 2 messages beyond max_awaiting_rel.
    assert f"max_awaiting_rel = {BROKER_INFLIGHT}" in conf
    # Secrets come from the env file, never from this file.
    assert "cookie =" not in conf and "default_password" not in conf


def _emqx_subscribe(user: str, subscription: str) -> bool:
    """EMQX authorizes `$share/<group>/<filter>` as <filter> (emqx_topic:get_shared_real_topic);
    `$queue/...` and other `$` prefixes are authorized verbatim."""
    if subscription.startswith("$share/"):
        subscription = subscription.split("/", 2)[2]
    return EMQX.allowed(user, subscription, "subscribe")


def test_publisher_shared_subscription_is_allowed_and_nothing_else_opens_up():
    assert _emqx_subscribe("publisher", "$share/publishers/medsec/ingest/+")
    assert _emqx_subscribe("publisher", "$share/publishers/medsec/events/+")
    assert not _emqx_subscribe("dashboard", "$share/publishers/medsec/ingest/+")
    # A $queue/ subscription is checked with its prefix: no rule allows it, deny-all catches it.
    for user in USERS:
        assert not _emqx_subscribe(user, "$queue/medsec/ingest/+")
        assert not _emqx_subscribe(user, "#")
