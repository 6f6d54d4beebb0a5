"""The internal bus: topic names (so producers and consumers agree) and the paho client of the
synchronous tools (CLI, keyadmin, dynsec_admin). The async services use services/common/mqttclient.py.
"""
from __future__ import annotations

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from services.common.config import Config
from services.common.state import mqtt_password

INGEST = "medsec/ingest/{device}"
# Several readings (of any devices) in one bus message: a JSON array of INGEST payloads, in the
# order the proxy accepted them. '~' is not a valid device id, so it names no device.
INGEST_BATCH = "medsec/ingest/~batch"
MAX_BATCH_READINGS = 64
MAX_BATCH_BYTES = 64 * 1024
EVENTS = "medsec/events/{device}"
KEY_EVENTS = "medsec/keys/events"
# The audit log's head, retained (services/keyadmin/audit_witness.py).
AUDIT_HEAD = "medsec/audit/head"
# Events that name no device (an unidentified connection) use this id; '~' is not a valid device id.
UNIDENTIFIED = "~unidentified"


def make_client(
    config: Config, account: str, client_id: str, *, persistent: bool = False
) -> mqtt.Client:
    """A connected-in-the-background client; reconnects by itself.

    persistent=True keeps the broker session (and its queued QoS 1 messages)
    across disconnects: a fixed client id with clean session off.
    """
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=not persistent,
        protocol=mqtt.MQTTv311,
    )
    client.username_pw_set(account, mqtt_password(config, account))
    client.reconnect_delay_set(min_delay=0.05, max_delay=2)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    return client


def start(client: mqtt.Client, config: Config) -> None:
    client.connect_async(config.broker_host, config.mqtt_port, keepalive=15)
    client.loop_start()
