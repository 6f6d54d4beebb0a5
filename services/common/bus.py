"""The internal bus: paho-mqtt clients with the service's generated account.

Topic names live here so producers and consumers agree.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from services.common.config import Config
from services.common.state import mqtt_password

INGEST = "medsec/ingest/{device}"
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


class AckTracker:
    """Turns paho's on_publish (the broker's PUBACK, on paho's thread) into asyncio futures."""

    def __init__(self, client: mqtt.Client, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._early: set[int] = set()
        client.on_publish = self._on_publish

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self._loop.create_future()
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            future.set_exception(ConnectionError("bus publish queue is full"))
            return future
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                future.set_result(None)
            else:
                self._pending[info.mid] = future
        return future

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._lock:
            future = self._pending.pop(mid, None)
            if future is None:
                self._early.add(mid)
                return
        self._loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
