"""The generated Mosquitto config (dynamic security) enforces the policy table on a real Mosquitto.

A subscription outside an account's rights is refused in its SUBACK, and nothing
is delivered either. A test-only witness account (appended to the generated
file, readwrite on everything) publishes what a case's user should receive and receives what it
publishes. A SUBACK on a barrier topic orders the check: Mosquitto writes to a
client in order, so anything delivered before the barrier's SUBACK has arrived.
"""
from __future__ import annotations

import json

import pytest

from services.broker.mosquitto import dynsec_path, write_broker_files
from services.common.state import init_state, load_passwords, write_secret
from tests.deploy.policy_cases import CASES
from tests.support.broker import Subscriber, connack, mosquitto_binary
from tests.support.proc import port_open, wait_until

# Only service and station accounts become broker logins: the witness is a station by name, and
# its extra rights (readwrite on everything) are added to the generated file below.
WITNESS = "station-witness"
EXTRA = {WITNESS: "witness-pw-0123456789", "station-a": "station-a-pw-0123456789",
         "station-b": "station-b-pw-0123456789"}


@pytest.fixture(params=["tcp", "unix"])
def policy_broker(config, procs, request):
    """A case's user connects over TCP (dashboards, stations) or the Unix socket (the services on
    the broker's machine): the same logins and rights on both."""
    init_state(config)
    passwords = {**load_passwords(config), **EXTRA}
    write_secret(config.mqtt_passwords_path, json.dumps(passwords).encode())
    conf = write_broker_files(config)
    dynsec_file = dynsec_path(config)
    doc = json.loads(dynsec_file.read_bytes())
    role = next(r for r in doc["roles"] if r["rolename"] == WITNESS)
    role["acls"] += [{"acltype": t, "topic": "#", "allow": True}
                     for t in ("subscribePattern", "publishClientReceive", "publishClientSend")]
    write_secret(dynsec_file, json.dumps(doc).encode())
    procs.start("mosquitto", [mosquitto_binary(), "-c", str(conf)])
    wait_until(lambda: port_open(config.mqtt_port), 10, what="mosquitto")
    clients: dict[str, Subscriber] = {}

    def client(user: str) -> Subscriber:
        if user not in clients:
            # The witness always on TCP: it stands for the other side of each case.
            clients[user] = Subscriber(config, user, passwords[user],
                                       unix=request.param == "unix" and user != WITNESS)
        return clients[user]

    yield client
    for c in clients.values():
        c.close()


def barrier(sub: Subscriber, name: str) -> None:
    sub.subscribe(f"barrier/{name}")


def test_policy_table_on_real_mosquitto(policy_broker, request):
    witness = policy_broker(WITNESS)
    failures = []
    for n, (user, topic, action, expected) in enumerate(CASES):
        if topic.startswith("$"):
            continue  # $SYS is broker-published, $CONTROL runs commands: the witness cannot stand in
        actor = policy_broker(user)
        payload = f"{request.node.name}-{n}".encode()
        if action == "publish":
            witness.subscribe(topic)
            actor.client.publish(topic, payload, qos=1).wait_for_publish(5)
            barrier(witness, str(n))
            got = payload in witness.on(topic)
            witness.client.unsubscribe(topic)
        else:
            granted = not actor.subscribe(topic)[0].is_failure
            witness.client.publish(topic, payload, qos=1).wait_for_publish(5)
            barrier(actor, str(n))
            got = payload in actor.on(topic)
            actor.client.unsubscribe(topic)
            if granted is not expected:
                failures.append((user, topic, "SUBACK", expected))
        if got is not expected:
            failures.append((user, topic, action, expected))
    assert failures == []
    # Not vacuous: the table has allowed and denied cases, and the witness saw traffic.
    assert {c[3] for c in CASES} == {True, False} and witness.messages


@pytest.mark.parametrize("user, subscription, expected", [
    ("publisher", "$share/publishers/medsec/ingest/+", True),
    ("monitor", "$share/ops/medsec/dispatch/#", True),
    ("dashboard", "$share/publishers/medsec/ingest/+", False),
    ("station-a", "$share/g/medsec/dispatch/station-b/params", False),
    ("station-a", "medsec/dispatch/+/params", False),
    ("dashboard", "#", False),
])
def test_shared_and_wildcard_subscriptions_get_no_more_than_the_account_may_read(
        policy_broker, user, subscription, expected):
    assert (not policy_broker(user).subscribe(subscription)[0].is_failure) is expected


@pytest.mark.parametrize("user, password", [(None, None), ("publisher", "not-its-password"),
                                            ("nobody", "whatever-0123456789")])
def test_either_listener_refuses_a_login_without_the_right_password(policy_broker, config, request,
                                                                      user, password):
    policy_broker(WITNESS)  # the broker is up
    unix = request.node.callspec.params["policy_broker"] == "unix"
    assert connack(config, user, password, unix) == "Not authorized"  # MQTT 3.1.1 CONNACK code 5


def test_the_unix_socket_is_in_a_directory_only_its_owner_enters(policy_broker, config):
    policy_broker(WITNESS)
    assert config.broker_socket is not None and config.broker_socket.is_socket()
    assert config.broker_socket.parent.stat().st_mode & 0o077 == 0
