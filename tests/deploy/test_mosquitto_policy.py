"""The generated Mosquitto ACL enforces the policy table on a real Mosquitto.

A test-only witness account (appended to the generated files, readwrite on
everything) publishes what a case's user should receive and receives what it
publishes. A SUBACK on a barrier topic orders the check: Mosquitto writes to a
client in order, so anything delivered before the barrier's SUBACK has arrived.
"""
from __future__ import annotations

import json

import pytest

from services.broker.mosquitto import write_broker_files
from services.common.state import init_state, load_passwords, write_secret
from tests.deploy.policy_cases import CASES
from tests.support.broker import Subscriber, mosquitto_binary
from tests.support.proc import port_open, wait_until

# Only service and station accounts become broker logins: the witness is a station by name, and
# its extra rule (readwrite on everything) is appended to the generated ACL below.
WITNESS = "station-witness"
EXTRA = {WITNESS: "witness-pw-0123456789", "station-a": "station-a-pw-0123456789",
         "station-b": "station-b-pw-0123456789"}


@pytest.fixture
def policy_broker(config, procs):
    init_state(config)
    passwords = {**load_passwords(config), **EXTRA}
    write_secret(config.mqtt_passwords_path, json.dumps(passwords).encode())
    conf = write_broker_files(config)
    acl = config.broker_dir / "acl"
    write_secret(acl, acl.read_bytes() + f"\nuser {WITNESS}\ntopic readwrite #\n".encode())
    procs.start("mosquitto", [mosquitto_binary(), "-c", str(conf)])
    wait_until(lambda: port_open(config.mqtt_port), 10, what="mosquitto")
    clients: dict[str, Subscriber] = {}

    def client(user: str) -> Subscriber:
        if user not in clients:
            clients[user] = Subscriber(config, user, passwords[user])
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
        if topic.startswith("$SYS"):
            continue  # broker-published; the witness cannot write it
        actor = policy_broker(user)
        payload = f"{request.node.name}-{n}".encode()
        if action == "publish":
            witness.subscribe(topic)
            actor.client.publish(topic, payload, qos=1).wait_for_publish(5)
            barrier(witness, str(n))
            got = payload in witness.on(topic)
            witness.client.unsubscribe(topic)
        else:
            actor.subscribe(topic)  # Mosquitto grants; the ACL filters each delivery
            witness.client.publish(topic, payload, qos=1).wait_for_publish(5)
            barrier(actor, str(n))
            got = payload in actor.on(topic)
            actor.client.unsubscribe(topic)
        if got is not expected:
            failures.append((user, topic, action, expected))
    assert failures == []
    # Not vacuous: the table has allowed and denied cases, and the witness saw traffic.
    assert {c[3] for c in CASES} == {True, False} and witness.messages
