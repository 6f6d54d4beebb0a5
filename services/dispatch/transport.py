"""The bus side of the dispatch server: a persistent session (services/common/mqttclient).

A message is acknowledged to the broker only after the service has handled it
(and its answers are queued before that acknowledgement, in the same write);
the next message is read only then, so a slow server makes the broker keep
the rest in the session queue: nothing is acknowledged and then dropped.
The service's work (RSA, key-admin lookups) runs in a worker thread so the
connection keeps answering keepalives meanwhile.
"""
from __future__ import annotations

import asyncio
import logging

from services.common import mqttwire as wire
from services.common.config import Config
from services.common.logs import kv
from services.common.mqttclient import MqttClient
from services.common.state import mqtt_password
from services.dispatch import topics
from services.dispatch.service import DispatchService

CLIENT_ID = "medsec-dispatch"

log = logging.getLogger("medsec.dispatch")


class DispatchTransport:
    def __init__(self, config: Config, service: DispatchService, loop: asyncio.AbstractEventLoop) -> None:
        self.service = service
        self.loop = loop
        self.client = MqttClient(
            config.broker_host, config.mqtt_port, CLIENT_ID, "dispatch", mqtt_password(config, "dispatch"),
            clean_session=False, subscriptions=[(t, 1) for t in topics.subscriptions()],
            on_message=self._on_message, log=log, socket_path=config.broker_socket,
        )
        service.publish = self._publish_threadsafe

    def _publish_threadsafe(self, topic: str, payload: bytes, retain: bool) -> None:
        # Called from the worker thread: queued in the loop before the handler's completion is,
        # so an answer always precedes the PUBACK of the message it answers.
        self.loop.call_soon_threadsafe(self.client.send, topic, payload, retain)

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(self.service.publish_status)
        await self.client.run(stop)

    async def _on_message(self, msg: wire.Publish) -> None:
        try:
            await asyncio.to_thread(self.service.handle, msg.topic, msg.payload)
        except Exception as exc:  # a bug on one message must not stop the line; it is acknowledged
            log.exception(kv(event="error", topic=msg.topic[:100], error=type(exc).__name__))
