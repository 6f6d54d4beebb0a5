"""The proxy's bus output (services/proxy/output.py) on the project's real Mosquitto: readings of
one loop turn leave as one bus message, in order, and nothing acknowledged is lost to an outage."""
from __future__ import annotations

import asyncio
import json
import logging
import uuid

from services.common.bus import INGEST_BATCH
from services.common.mqttclient import MqttClient
from services.common.state import mqtt_password
from services.proxy.metrics import Metrics
from services.proxy.output import Output, event_payload, ingest_payload
from tests.support.broker import start_mosquitto

VALUES = {"Temp": "36.600", "TempMcu": "23.700", "PulseSig": "2.123", "Acel_x": "-0.01",
          "Acel_y": "0.000", "Acel_z": "1.002", "TempMpu": "23.400"}


def payload(device: str, n: int) -> bytes:
    return ingest_payload(device, VALUES, "v2", n, ("10.0.0.1", 5000), ("127.0.0.1", 9998), f"u{n}", 1.0 + n)


async def until(condition, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


class Bus:
    """The proxy's Output and a persistent-session subscriber of medsec/# (the publisher's view)."""

    def __init__(self, config) -> None:
        loop = asyncio.get_running_loop()
        self.output = Output(config, f"t-proxy-{uuid.uuid4().hex[:6]}", loop, Metrics(), lambda e: None)
        self.got: list[tuple[str, bytes]] = []
        self.sub = MqttClient(config.host, config.mqtt_port, f"t-sub-{uuid.uuid4().hex[:6]}", "publisher",
                              mqtt_password(config, "publisher"), clean_session=False, min_delay=0.02,
                              max_delay=0.3, subscriptions=[("medsec/ingest/+", 1), ("medsec/events/+", 1)],
                              on_message=lambda m: self.got.append((m.topic, m.payload)),
                              log=logging.getLogger("test"))
        self.stop = asyncio.Event()
        self.sub_task = asyncio.create_task(self.sub.run(self.stop))

    async def start(self) -> None:
        self.output.start()
        await until(lambda: self.output.bus_up and self.sub.subscribed.is_set(), 10)

    def readings(self) -> list[tuple[str, int]]:
        out = []
        for topic, body in self.got:
            if topic.startswith("medsec/ingest/"):
                docs = json.loads(body)
                out += [(d["device"], d["seq"]) for d in (docs if isinstance(docs, list) else [docs])]
        return out

    async def close(self) -> None:
        await self.output.stop()
        self.stop.set()
        await self.sub_task


def test_one_loop_turn_is_one_bus_message_in_order_and_events_keep_their_place(config, broker) -> None:
    async def main() -> None:
        bus = Bus(config)
        await bus.start()
        lone = bus.output.publish_reading("d0", payload("d0", 1))
        await asyncio.wait_for(lone, 5)  # a lone reading leaves at once, on its device's topic
        sent = [(f"d{i % 7}", n) for n, i in enumerate(range(150), start=2)]
        futures = [bus.output.publish_reading(d, payload(d, n)) for d, n in sent[:100]]
        bus.output.publish_event("d3", event_payload("disconnect", "d3", "eof", "", None, "v2", 2.0))
        futures += [bus.output.publish_reading(d, payload(d, n)) for d, n in sent[100:]]
        await asyncio.wait_for(asyncio.gather(*futures), 5)
        await until(lambda: len(bus.readings()) == 151 and any("events" in t for t, _ in bus.got), 5)
        assert bus.readings() == [("d0", 1)] + sent
        topics = [t for t, _ in bus.got]
        # 100 readings: 64 + 36 (the size bound), then the event, then the 50 after it.
        assert topics == ["medsec/ingest/d0", INGEST_BATCH, INGEST_BATCH, "medsec/events/d3", INGEST_BATCH]
        assert [len(json.loads(b)) for t, b in bus.got if t == INGEST_BATCH] == [64, 36, 50]
        assert bus.output.readings_waiting == 0 and bus.output.metrics.bus_messages == 4
        assert bus.output.metrics.publish[1] == 151  # each reading timed once, from its batch
        await bus.close()

    asyncio.run(main())


def test_a_batch_in_flight_when_the_broker_stops_arrives_after_it_is_back(config, broker, procs) -> None:
    async def main() -> None:
        bus = Bus(config)
        await bus.start()
        procs.stop(broker)  # SIGTERM: Mosquitto saves the subscriber's session
        await until(lambda: not bus.output.bus_up, 10)
        sent = [(f"d{i % 3}", n) for n, i in enumerate(range(40), start=1)]
        futures = [bus.output.publish_reading(d, payload(d, n)) for d, n in sent]
        await asyncio.sleep(0.3)  # the broker is down: not a synchronisation, a window for a wrong ack
        assert not any(f.done() for f in futures)  # nothing acknowledged while nobody holds them
        start_mosquitto(config, procs)
        await asyncio.wait_for(asyncio.gather(*futures), 15)
        await until(lambda: len(bus.readings()) >= len(sent), 10)
        assert bus.readings() == sent  # whole and in order (once: resent only if never acknowledged)
        await bus.close()

    asyncio.run(main())
