"""The MQTT side of the publisher: a persistent session on the internal bus.

Delivery guarantee: an incoming QoS 1 message is acknowledged to the broker
(PUBACK) only after the broker has acknowledged every message published for
it (paho's manual_ack). A crash at any moment therefore leaves the reading
unacknowledged in the broker's session queue, which redelivers it to the next
run: at least once, never lost.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

import paho.mqtt.client as mqtt

from services.common import bus
from services.common.config import Config
from services.common.logs import kv
from services.publisher.service import PublisherService

CLIENT_ID = "medsec-publisher"
SUBSCRIPTIONS = [("medsec/ingest/+", 1), ("medsec/events/+", 1)]


class BusTransport:
    def __init__(self, config: Config, service: PublisherService, log: logging.Logger) -> None:
        self.config = config
        self.service = service
        self.log = log
        self.connected = threading.Event()
        self.stopping = False
        # Both maps are touched only on paho's network thread (on_message, on_publish).
        self._waiting: dict[int, int] = {}  # outgoing mid -> incoming mid it was published for
        self._remaining: dict[int, int] = {}  # incoming mid -> outgoing messages not yet acknowledged
        self._idle = threading.Event()
        self._idle.set()
        client = bus.make_client(config, "publisher", CLIENT_ID, persistent=True)
        client.manual_ack_set(True)
        # No client-side inflight cap: a message parked in paho's queue must not let the PUBACK overtake it.
        client.max_inflight_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        self.client = client

    def start(self) -> None:
        bus.start(self.client, self.config)

    def stop(self, drain_timeout: float = 5.0) -> bool:
        """Stop taking messages, wait for outstanding acknowledgements, disconnect. True if fully drained."""
        self.stopping = True
        drained = self._idle.wait(drain_timeout)
        self.client.disconnect()
        self.client.loop_stop()
        return drained

    # --- paho callbacks (network thread) ---
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            self.log.error(kv(event="bus_connect_failed", reason=reason_code))
            return
        client.subscribe(SUBSCRIPTIONS)
        self.connected.set()
        self.log.info(kv(event="bus_connected", session_present=int(bool(flags.session_present))))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any,
                      properties: Any) -> None:
        if any(rc.is_failure for rc in reason_codes):
            self.log.error(kv(event="bus_subscribe_failed", codes=",".join(str(rc) for rc in reason_codes)))
        else:
            self.log.info(kv(event="bus_subscribed", topics=",".join(t for t, _ in SUBSCRIPTIONS)))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        self.connected.clear()
        if not self.stopping:
            self.log.warning(kv(event="bus_disconnected", reason=reason_code))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self.stopping:
            return  # left unacknowledged: the broker redelivers it to the next run
        try:
            out = self.service.handle(msg.topic, msg.payload)
        except Exception:  # a bug must not kill the network thread; the reading stays unacknowledged
            self.log.exception(kv(event="handler_error", topic=msg.topic[:100]))
            return
        if msg.qos == 0:
            for topic, payload, retain in out:
                client.publish(topic, payload, qos=1, retain=retain)
            return
        if not out:
            # A duplicate of a message whose publishes are still unacknowledged is acked with it.
            if msg.mid not in self._remaining:
                client.ack(msg.mid, msg.qos)
            return
        self._idle.clear()
        self._remaining[msg.mid] = self._remaining.get(msg.mid, 0) + len(out)
        for topic, payload, retain in out:
            info = client.publish(topic, payload, qos=1, retain=retain)
            self._waiting[info.mid] = msg.mid

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any,
                    properties: Any) -> None:
        incoming = self._waiting.pop(mid, None)
        if incoming is None:
            return
        left = self._remaining[incoming] - 1
        if left:
            self._remaining[incoming] = left
            return
        del self._remaining[incoming]
        client.ack(incoming, 1)
        if not self._remaining:
            self._idle.set()
