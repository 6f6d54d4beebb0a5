"""The audit log's head, witnessed on the broker, so that dropping its last entries shows.

Each audit entry's hash covers the one before it: an edit breaks the chain. Dropping
the newest entries, though, leaves a shorter chain that is still whole. So keyadmin
keeps the head (seq, hash) as a retained message on `medsec/audit/head`, moves it
only forward, and only when the log still holds the entry it witnessed last; and
`medsec audit verify` compares the log with it. Someone who can rewrite the key
store must now also hold keyadmin's broker password to hide a truncation.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from services.common import bus, lookup
from services.common.config import Config
from services.common.logs import kv
from services.keystore.audit import AuditEntry
from services.keystore.store import KeyStore

log = logging.getLogger("medsec.keyadmin")

# After the SUBACK, how long a retained witness may take to arrive (the broker sends it at once).
SETTLE = 0.5


@dataclass(frozen=True)
class Witness:
    seq: int
    hash: str


def encode(witness: Witness) -> bytes:
    return json.dumps({"seq": witness.seq, "hash": witness.hash, "ts": time.time()}).encode()


def decode(payload: bytes) -> Witness | None:
    try:
        doc = json.loads(payload)
        return Witness(int(doc["seq"]), str(doc["hash"]))
    except (ValueError, TypeError, KeyError):
        return None


def mismatch(witness: Witness, entry: AuditEntry | None, last_seq: int) -> str | None:
    """Why the log no longer holds the witnessed entry; None when it does."""
    if entry is None:
        return (f"TRUNCATED: the broker witnessed entry {witness.seq} (hash {witness.hash[:16]}), "
                f"but the log ends at entry {last_seq}")
    if entry.hash != witness.hash:
        return (f"REWRITTEN: entry {witness.seq} has hash {entry.hash[:16]}, "
                f"the broker witnessed {witness.hash[:16]}")
    return None


def next_witness(witness: Witness | None, head: tuple[int, str] | None,
                 witnessed_entry: AuditEntry | None) -> tuple[Witness | None, str | None]:
    """(what to publish, what is wrong): move the witness forward to `head` only over an intact
    past. `witnessed_entry` is the log's entry at the witness's seq (None if gone)."""
    if head is None:
        return None, (mismatch(witness, None, 0) if witness else None)
    if witness is not None:
        problem = mismatch(witness, witnessed_entry, head[0])
        if problem:
            return None, problem
        if head[0] <= witness.seq:
            return None, None
    return Witness(*head), None


def entry_at(store: KeyStore, seq: int) -> AuditEntry | None:
    found = store.audit(after=seq - 1, limit=1)
    return found[0] if found and found[0].seq == seq else None


class WitnessKeeper(threading.Thread):
    """In keyadmin: once a second, publish the log's head when it moved forward over an intact past.

    Entries that auth appends (bursts, confirmed rotations) are witnessed the same way."""

    def __init__(self, config: Config, store: KeyStore, interval: float = 1.0) -> None:
        super().__init__(name="audit-witness", daemon=True)
        self.store = store
        self.interval = interval
        self.witness: Witness | None = None
        self._subscribed_at: float | None = None
        self._reported: str | None = None
        self._stopping = threading.Event()
        self._config = config
        self.client = bus.make_client(config, "keyadmin", f"keyadmin-witness-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda c, u, mid, codes, p: self._subscribed(codes)
        self.client.on_message = self._on_message

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc == 0:
            client.subscribe(bus.AUDIT_HEAD, qos=1)

    def _subscribed(self, codes: list) -> None:
        if not any(c.is_failure for c in codes):
            self._subscribed_at = time.monotonic()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        seen = decode(msg.payload)
        if seen is not None and (self.witness is None or seen.seq >= self.witness.seq):
            self.witness = seen

    def run(self) -> None:
        bus.start(self.client, self._config)
        while not self._stopping.wait(self.interval):
            if self._subscribed_at is None or time.monotonic() - self._subscribed_at < SETTLE:
                continue  # the retained witness may still be on its way
            try:
                self.step()
            except Exception as exc:  # a store hiccup must not end the witness
                log.warning(kv(event="audit_witness_failed", error=type(exc).__name__))

    def step(self) -> None:
        head = self.store.audit_head()
        witnessed = entry_at(self.store, self.witness.seq) if self.witness else None
        publish, problem = next_witness(self.witness, head, witnessed)
        if problem:
            if problem != self._reported:  # once per state, not once a second
                log.error(kv(event="audit_log_tampered", detail=problem))
                self._reported = problem
            return
        if publish is not None:
            self.client.publish(bus.AUDIT_HEAD, encode(publish), qos=1, retain=True)
            self.witness = publish

    def close(self) -> None:
        self._stopping.set()
        self.client.loop_stop()
        self.client.disconnect()


def read_witness(config: Config, account: str = "monitor", timeout: float = 5.0) -> Witness | None:
    """The retained witness (None if there is none yet). OSError if the broker cannot be reached."""
    got: list[Witness] = []
    refused: list[str] = []
    answered, arrived = threading.Event(), threading.Event()

    def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc == 0:
            client.subscribe(bus.AUDIT_HEAD, qos=1)
        else:
            refused.append(f"the broker refused the {account} login ({rc})")
            answered.set()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        witness = decode(msg.payload)
        if witness is not None:
            got.append(witness)
            arrived.set()

    client = bus.make_client(config, account, f"audit-verify-{uuid.uuid4().hex[:8]}")
    client.on_connect, client.on_message = on_connect, on_message
    client.on_subscribe = lambda c, u, mid, codes, p: answered.set()
    lookup.retrying(lambda: client.connect(config.broker_host, config.mqtt_port, keepalive=15))
    client.loop_start()
    try:
        if not answered.wait(timeout):
            raise OSError(f"the broker at {config.broker_host}:{config.mqtt_port} did not answer")
        if refused:
            raise OSError(refused[0])
        arrived.wait(SETTLE)  # the retained message follows the SUBACK
    finally:
        client.disconnect()
        client.loop_stop()
    return got[-1] if got else None
