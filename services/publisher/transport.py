"""The MQTT side of the publisher: a persistent session on the internal bus (services/common/mqttclient).

Delivery guarantee: the publishes of a reading and then the PUBACK of the
incoming message go out in one write on one TCP connection (the client
acknowledges a message only after its handler ran, in the same write as what
the handler published). The broker handles a connection's packets in order,
so it can only have seen the acknowledgement if it has seen every publish
before it; a crash at any moment leaves the reading either fully handed over
or unacknowledged in the broker's session queue (fixed client id, clean
session off), which redelivers it to the next run. Publishes the broker has
not acknowledged are kept and sent again after a reconnect.

The public tree is published at QoS 2 (MEDSEC_PUBLIC_QOS), within the
broker's in-flight limit (BROKER_INFLIGHT): a publish resent after a broker
restart is then forwarded once, where a QoS 1 resend would reach every
subscriber a second time as a new message. (Subscribers choose their own QoS:
at QoS 1 a broker restart may redeliver to them, marked DUP.) The seven legacy
value topics go at MEDSEC_LEGACY_QOS, 0 by default, as the design they come
from sent them: Pico/<id>/json is each reading's exactly-once record, and at
QoS 2 the value topics cost the broker and the publisher more than the rest
of the gateway together (issue 13; README "Public topics").
"""
from __future__ import annotations

import asyncio
import logging

from services.common import mqttwire as wire
from services.common.config import Config
from services.common.mqttclient import BROKER_INFLIGHT, MqttClient, TopicTable
from services.common.state import mqtt_password
from services.publisher.service import PublisherService
from services.publisher.topics import qos_for

CLIENT_ID = "medsec-publisher"
SUBSCRIPTIONS = [("medsec/ingest/+", 1), ("medsec/events/+", 1)]
KEEPALIVE = 15
# At a stop, how long the broker gets to complete what is in flight: well inside compose's 2 s grace,
# so the publisher ends by itself. Whatever is still open then is not lost: the incoming message
# was not acknowledged (redelivered), or the broker holds it until the next run releases it.
STOP_DRAIN = 0.8
# Under load, the broker's PUBRECs and PUBCOMPs are read every 2 ms, not as each arrives
# (services/common/mqttclient.py, gather_acks): a bus message waits at most this much longer.
GATHER_ACKS = 0.002


class BusTransport:
    def __init__(self, config: Config, service: PublisherService, log: logging.Logger,
                 client_id: str = CLIENT_ID, subscriptions: list[tuple[str, int]] | None = None) -> None:
        self.service = service
        self.qos = config.public_qos
        self.legacy_qos = config.legacy_qos
        self.log = log
        self._topics = TopicTable(lambda topic: qos_for(topic, self.qos, self.legacy_qos))
        self.client = MqttClient(
            config.broker_host, config.mqtt_port, client_id, "publisher", mqtt_password(config, "publisher"),
            clean_session=False, keepalive=KEEPALIVE, subscriptions=subscriptions or SUBSCRIPTIONS,
            on_message=self._on_message, log=log, window=BROKER_INFLIGHT, release_stored=True,
            gather_acks=GATHER_ACKS, socket_path=config.broker_socket,
        )

    @property
    def connected(self) -> bool:
        return self.client.connected

    @property
    def drained(self) -> bool:
        return self.client.drained

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set; then wait for the broker's PUBACKs (bounded) and disconnect."""
        await self.client.run(stop, drain=STOP_DRAIN)

    def _on_message(self, msg: wire.Publish) -> None:
        # Raising leaves the message unacknowledged (the client logs it): the broker redelivers it.
        self.client.send_many(self.service.handle(msg.topic, msg.payload), self._topics)
