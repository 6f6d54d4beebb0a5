"""Apply login changes to a running Mosquitto through the dynamic-security command topic.

The plugin does not reread its file on SIGHUP; its command topic changes the running
broker at once (and the plugin saves its file). Sent as the `brokeradmin` account.
"""
from __future__ import annotations

import json
import threading
import uuid
from typing import Any

from services.broker import BrokerError
from services.common import bus, lookup
from services.common.config import Config
from services.common.state import StateError

ADMIN_ACCOUNT = "brokeradmin"
COMMAND_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = COMMAND_TOPIC + "/response"
# Errors meaning the broker already is as asked: a retried change is not a failure.
ALREADY_DONE = ("already exists", "not found")


def refused(responses: list[dict]) -> list[str]:
    """The errors among the plugin's responses that are real failures."""
    return [f"{r.get('command')}: {r['error']}" for r in responses
            if r.get("error") and not any(s in r["error"].lower() for s in ALREADY_DONE)]


def send(config: Config, commands: list[dict], timeout: float = 10.0) -> bool:
    """Run `commands` on the broker. False if no broker listens (its file applies at the next
    start); BrokerError if it refuses a command or does not answer in time."""
    tag = uuid.uuid4().hex
    tagged = [{**c, "correlationData": f"{tag}-{i}"} for i, c in enumerate(commands)]
    answers: list[dict] = []
    done = threading.Event()
    failure: list[str] = []

    def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc != 0:
            failure.append(f"the broker refused the {ADMIN_ACCOUNT} login ({rc})")
            done.set()
        else:
            client.subscribe(RESPONSE_TOPIC, qos=1)

    def on_subscribe(client: Any, userdata: Any, mid: int, codes: list, props: Any) -> None:
        if any(c.is_failure for c in codes):
            failure.append(f"the broker refused {ADMIN_ACCOUNT} its response topic")
            done.set()
        else:
            client.publish(COMMAND_TOPIC, json.dumps({"commands": tagged}), qos=1)

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        try:
            responses = json.loads(msg.payload).get("responses", [])
        except (ValueError, AttributeError):
            return
        answers.extend(r for r in responses if str(r.get("correlationData", "")).startswith(tag))
        if len(answers) >= len(tagged):
            done.set()

    try:
        client = bus.make_client(config, ADMIN_ACCOUNT, f"medsec-admin-{tag[:12]}")
    except StateError as exc:
        raise BrokerError(str(exc)) from None
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    try:
        lookup.retrying(lambda: client.connect(config.broker_host, config.mqtt_port))
    except ConnectionRefusedError:
        return False
    except OSError as exc:
        where = f"{config.broker_host}:{config.mqtt_port}"
        raise BrokerError(f"cannot reach the broker at {where}: {exc}") from None
    client.loop_start()
    try:
        if not done.wait(timeout):
            raise BrokerError(f"the broker did not answer account commands within {timeout:.0f} s")
    finally:
        client.disconnect()
        client.loop_stop()
    if failure:
        raise BrokerError(failure[0])
    errors = refused(answers)
    if errors:
        raise BrokerError("the broker refused an account change: " + "; ".join(errors))
    return True
