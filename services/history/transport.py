"""The MQTT side of history: a persistent session on the published readings (services/common/mqttclient).

Fixed client id, clean session off, QoS 1, acknowledgements deferred (`auto_ack=False`) until
the service has committed the batch: what the history missed while it was down, or while
the broker was, the broker's session queue delivers when it is back.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Hashable

from services.common import mqttwire as wire
from services.common.config import Config
from services.common.mqttclient import MqttClient
from services.common.state import mqtt_password
from services.history.readings import SUBSCRIPTION

CLIENT_ID = "medsec-history"
ACCOUNT = "history"
KEEPALIVE = 15


class HistoryTransport:
    def __init__(self, config: Config, log: logging.Logger) -> None:
        self.client = MqttClient(
            config.broker_host, config.mqtt_port, CLIENT_ID, ACCOUNT, mqtt_password(config, ACCOUNT),
            clean_session=False, keepalive=KEEPALIVE, subscriptions=[(SUBSCRIPTION, 1)],
            on_message=self._on_message, log=log, auto_ack=False, socket_path=config.broker_socket,
        )
        self.take: Callable[[str, bytes, Hashable], None] | None = None  # main: HistoryService.take

    def _on_message(self, msg: wire.Publish) -> None:
        if self.take is None:
            raise RuntimeError("no service attached")  # left unacknowledged: delivered again
        self.take(msg.topic, msg.payload, (msg.mid, self.client.session))

    def ack(self, token: Hashable) -> None:
        mid, session = token  # type: ignore[misc]
        if mid is not None:  # QoS 0 (never subscribed so) needs none
            self.client.ack(mid, session)

    def live(self, token: Hashable) -> bool:
        """Whether a message's acknowledgement can still reach the broker (same connection)."""
        return token[1] == self.client.session and self.client.connected  # type: ignore[index]

    def stop_intake(self) -> None:
        """Take no more messages (they stay with the broker); what was taken can still be acked."""
        self.client.stopping = True
