"""`python -m services.dispatch`: the parameter server of seed workflow 2."""
from __future__ import annotations

import queue
import signal
import sys
import threading
from typing import Any

import paho.mqtt.client as mqtt

from services.common import bus
from services.common.config import Config
from services.common.logs import kv, setup
from services.common.state import StateError, service_token
from services.dispatch import topics
from services.dispatch.keys import StationKeys, load_or_create_server_key
from services.dispatch.service import DispatchConfig, DispatchService

QUEUE = 1000


def main() -> int:
    log = setup("dispatch")
    try:
        config = Config.from_env()
        cfg = DispatchConfig.from_env(config)
        # Its own token, scope stations:read: station public keys and nothing else (state.SERVICE_TOKENS).
        station_keys = StationKeys(config.admin_url, service_token(config, "dispatch"), ttl=cfg.key_ttl)
        server_key = load_or_create_server_key(config)
    except (StateError, ValueError, OSError) as exc:
        log.error(kv(event="start_failed", error=str(exc)))
        return 1
    inbox: queue.Queue[tuple[str, bytes] | None] = queue.Queue(QUEUE)
    # A persistent session: requests and results sent while the server restarts wait in the broker.
    client = bus.make_client(config, "dispatch", "medsec-dispatch", persistent=True)

    def publish(topic: str, payload: bytes, retain: bool) -> None:
        client.publish(topic, payload, qos=1, retain=retain)

    service = DispatchService(cfg, server_key, station_keys, publish)

    def on_connect(c: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc == 0:
            for t in topics.subscriptions():
                c.subscribe(t, qos=1)
            log.info(kv(event="connected", params=cfg.params_dir))
            inbox.put(("", b""))  # ask the worker to publish the status once connected

    def on_message(c: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            inbox.put_nowait((msg.topic, msg.payload))
        except queue.Full:
            log.warning(kv(event="rejected", reason="overloaded", topic=msg.topic))

    client.on_connect = on_connect
    client.on_message = on_message
    stop = threading.Event()

    def worker() -> None:
        while True:
            item = inbox.get()
            if item is None:
                return
            topic, payload = item
            try:
                if topic:
                    service.handle(topic, payload)
                else:
                    service.publish_status()
            except Exception as exc:  # one bad message must never stop the server
                log.exception(kv(event="error", topic=topic, error=type(exc).__name__))

    thread = threading.Thread(target=worker, name="dispatch-worker", daemon=True)
    thread.start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    bus.start(client, config)
    log.info(kv(event="started", line_dir=cfg.params_dir, state=cfg.state_path))
    stop.wait()
    inbox.put(None)
    thread.join(10)
    client.disconnect()
    client.loop_stop()
    log.info(kv(event="stopped"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
