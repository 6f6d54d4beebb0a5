"""The history service's logic, without MQTT: messages in, batches stored, acknowledgements out.

`take()` is called for every delivered `Pico/<id>/json` message and only queues it. The writer
task stores the queue in batches (up to BATCH_MAX messages, or BATCH_WAIT s after the first
one) in a worker thread, so the event loop keeps reading, and only then acknowledges every
message of the batch. A message is therefore acknowledged to the broker only once its reading
is committed; a crash or a store outage leaves it in the broker's session queue, which
delivers it again (a copy is ignored by the store's key). A message that is not a reading is
acknowledged with its batch, logged and counted, never stored.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Any

from services.common.logs import kv
from services.history.readings import ReadingRefused, Row, parse
from services.history.store import HistoryStore, HistoryStoreError

# Below the brokers' in-flight limit (BROKER_INFLIGHT, 400): the broker never
# stalls waiting for acknowledgements of a batch that is still filling.
BATCH_MAX = 64
BATCH_WAIT = 0.25
RETRY_MAX = 5.0  # back-off ceiling while the store is down
PRUNE_INTERVAL = 600.0

Ack = Callable[[Hashable], None]
Live = Callable[[Hashable], bool]


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.values[name] += n

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            names = ("stored", "copies", "batches", "store_errors", "pruned_raw", "pruned_minutes")
            return {**{k: self.values[k] for k in names}, "rejected": dict(self.rejected)}


class HistoryService:
    def __init__(self, store: HistoryStore, ack: Ack, log: logging.Logger, *, raw_days: float,
                 agg_days: float, batch_max: int = BATCH_MAX, batch_wait: float = BATCH_WAIT,
                 clock: Callable[[], float] = time.time, live: Live = lambda token: True) -> None:
        self.store = store
        self.ack = ack
        self.live = live  # False for a message of a lost connection: the broker delivers it again
        self.log = log
        self.raw_days, self.agg_days = raw_days, agg_days
        self.batch_max, self.batch_wait = batch_max, batch_wait
        self.clock = clock
        self.counters = Counters()
        self._pending: list[tuple[Row | None, Hashable]] = []
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def take(self, topic: str, payload: bytes, token: Hashable) -> None:
        """Queue one delivered message; `token` goes back to `ack` once its batch is stored."""
        try:
            row: Row | None = parse(topic, payload)
        except ReadingRefused as exc:
            row = None
            self.counters.reject(exc.reason)
            self.log.warning(kv(event="rejected", topic=topic[:100], reason=exc.reason, detail=exc.detail))
        self._pending.append((row, token))
        self._arrived.set()
        if len(self._pending) >= self.batch_max:
            self._full.set()

    async def flush(self) -> bool:
        """Store what is queued and acknowledge it; False (nothing acknowledged) if the store failed."""
        batch, self._pending = self._pending, []
        self._arrived.clear()
        self._full.clear()
        if not batch:
            return True
        rows = [row for row, _ in batch if row is not None]
        try:
            new = await asyncio.to_thread(self.store.add, rows)
        except HistoryStoreError as exc:
            # Kept, in order, for the retry; except those of a lost connection, which the broker
            # delivers again (keeping them too would grow the queue with every reconnect).
            self._pending[:0] = [item for item in batch if self.live(item[1])]
            self._arrived.set()
            self.counters.add("store_errors")
            self.log.error(kv(event="store_failed", rows=len(rows), error=exc))
            return False
        self.counters.add("stored", new)
        self.counters.add("copies", len(rows) - new)
        self.counters.add("batches")
        for _, token in batch:
            self.ack(token)
        return True

    async def run_writer(self, stop: asyncio.Event) -> None:
        """Store batches until `stop`; then the caller flushes what is left (`drain`)."""
        delay = 0.1
        while not stop.is_set():
            await _first(stop, self._arrived.wait())
            if stop.is_set():
                return
            await _first(stop, self._full.wait(), timeout=self.batch_wait)
            if await self.flush():
                delay = 0.1
            else:
                await _first(stop, asyncio.sleep(delay))
                delay = min(delay * 2, RETRY_MAX)

    async def drain(self, timeout: float) -> bool:
        """At shutdown: store and acknowledge what is queued, within `timeout` s."""
        try:
            async with asyncio.timeout(timeout):
                return await self.flush()
        except TimeoutError:
            return False

    async def prune(self) -> None:
        try:
            raw, minutes = await asyncio.to_thread(self.store.prune, self.clock(), self.raw_days,
                                                   self.agg_days)
        except HistoryStoreError as exc:
            self.log.error(kv(event="prune_failed", error=exc))
            return
        self.counters.add("pruned_raw", raw)
        self.counters.add("pruned_minutes", minutes)
        if raw or minutes:
            self.log.info(kv(event="pruned", raw=raw, minutes=minutes))

    async def run_pruner(self, stop: asyncio.Event, interval: float = PRUNE_INTERVAL) -> None:
        while not stop.is_set():
            await self.prune()
            await _first(stop, asyncio.sleep(interval))


async def _first(stop: asyncio.Event, aw: Any, timeout: float | None = None) -> None:
    """Wait for `aw`, `stop` or `timeout`, whichever comes first."""
    task = asyncio.ensure_future(aw)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, stopper):
            t.cancel()
