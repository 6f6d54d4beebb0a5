"""The generated Mosquitto config really enforces the account policy (real broker)."""
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.broker import Subscriber
from tests.support.proc import wait_until


def test_anonymous_and_wrong_password_are_refused(config, broker):
    for user, pw in ((None, None), ("dashboard", "wrong")):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=uuid.uuid4().hex, protocol=mqtt.MQTTv311)
        if user:
            c.username_pw_set(user, pw)
        codes: list = []
        c.on_connect = lambda cl, ud, fl, rc, pr, codes=codes: codes.append(rc)
        c.connect(config.host, config.mqtt_port)
        c.loop_start()
        wait_until(lambda codes=codes: codes, 5, what="CONNACK")
        c.loop_stop()
        assert codes[0] != 0, f"{user} must be refused"


def assert_only_publisher_arrives(reader: Subscriber, publisher: Subscriber, topic: str) -> None:
    """reader (subscribed to topic) publishes there itself, which the ACL drops, then publisher does.
    The publisher's message comes last: once it is here, anything leaked would be too."""
    reader.client.publish(topic, b"forged", qos=1).wait_for_publish(5)
    publisher.client.publish(topic, b"real", qos=1).wait_for_publish(5)
    wait_until(lambda: reader.on(topic), 5, what="publisher's message")
    assert reader.on(topic) == [b"real"]
    assert reader.topics() == {topic}


def test_dashboard_reads_public_tree_only(config, broker, request):
    topic = f"Pico/{request.node.name}/json"
    internal = f"medsec/ingest/{request.node.name}"
    dash = Subscriber(config, "dashboard")
    pub = Subscriber(config, "publisher")
    proxy = Subscriber(config, "proxy")
    try:
        dash.subscribe(topic)
        assert dash.subscribe("medsec/#")[0].is_failure, "the internal bus is refused at SUBSCRIBE"
        proxy.client.publish(internal, b"internal", qos=1).wait_for_publish(5)
        assert_only_publisher_arrives(dash, pub, topic)
    finally:
        for c in (dash, pub, proxy):
            c.close()


@pytest.mark.parametrize("account", ["dashboard", "keyadmin", "dispatch"])
def test_only_proxy_writes_ingest(config, broker, account, request):
    topic = f"medsec/ingest/{request.node.name}"
    mon = Subscriber(config, "monitor")
    other = Subscriber(config, account)
    proxy = Subscriber(config, "proxy")
    try:
        mon.subscribe(topic)
        other.client.publish(topic, b"forged", qos=1).wait_for_publish(5)
        proxy.client.publish(topic, b"real", qos=1).wait_for_publish(5)
        wait_until(lambda: mon.on(topic), 5)
        assert mon.on(topic) == [b"real"]
    finally:
        for c in (mon, other, proxy):
            c.close()


def test_only_service_and_station_accounts_become_broker_logins():
    from services.broker.mosquitto import broker_logins

    logins = broker_logins({"proxy": "a", "dashboard": "b", "nodered-admin": "c", "station-s1": "d"})
    assert set(logins) == {"proxy", "dashboard", "station-s1"}


def test_history_reads_published_readings_only(config, broker, request):
    device = request.node.name.replace("_", "-")[:60]
    json_topic, status_topic = f"Pico/{device}/json", f"Pico/{device}/status"
    hist = Subscriber(config, "history")
    pub = Subscriber(config, "publisher")
    try:
        hist.subscribe("Pico/+/json")
        for refused in ("Pico/#", "Pico/+/status", "medsec/#", "#"):
            assert hist.subscribe(refused)[0].is_failure, refused
        pub.client.publish(status_topic, b"online", qos=1).wait_for_publish(5)
        assert_only_publisher_arrives(hist, pub, json_topic)
    finally:
        for c in (hist, pub):
            c.close()
