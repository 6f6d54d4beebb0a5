"""Key events on the bus (`medsec/keys/events`): proxies follow them to close revoked devices' connections."""
from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Protocol

from services.common import bus
from services.common.config import Config
from services.common.logs import kv

log = logging.getLogger("medsec.keyadmin")


class KeyEvents(Protocol):
    def publish(self, event: str, device: str) -> None: ...
    def close(self) -> None: ...


def payload(event: str, device: str, ts: float | None = None) -> bytes:
    """The event as documented in docs/architecture.md; never a secret."""
    return json.dumps({"event": event, "device": device, "ts": time.time() if ts is None else ts}).encode()


class BusKeyEvents:
    """QoS 1 with the keyadmin account; paho queues while the broker is away and resends on reconnect."""

    def __init__(self, config: Config) -> None:
        self._client = bus.make_client(config, "keyadmin", f"keyadmin-{uuid.uuid4().hex[:8]}")
        bus.start(self._client, config)

    def publish(self, event: str, device: str) -> None:
        info = self._client.publish(bus.KEY_EVENTS, payload(event, device), qos=1)
        if info.rc not in (0, 4):  # 4 = MQTT_ERR_NO_CONN: queued, sent after reconnect
            log.warning(kv(event="key_event_not_queued", key_event=event, device=device, rc=info.rc))

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


class NoKeyEvents:
    """For tools and tests that run the API without a broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def publish(self, event: str, device: str) -> None:
        self.sent.append((event, device))

    def close(self) -> None:
        pass
