"""HistoryService's batching, isolated from MQTT (pure logic; the store here is the real SQLite one,
wrapped to fail on demand): acknowledged only once stored, kept while the store fails."""
from __future__ import annotations

import asyncio
import logging

from services.history.service import HistoryService
from services.history.store import HistoryStoreError, open_history
from tests.history.support import payload


class Flaky:
    """The real store, refusing writes while `down` is set (a PostgreSQL outage, say)."""

    def __init__(self, store) -> None:
        self.store, self.down = store, False

    def add(self, rows):
        if self.down:
            raise HistoryStoreError("db:5432/history: OperationalError: connection refused")
        return self.store.add(rows)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_acks_follow_storage_and_survive_an_outage(config):
    store = Flaky(open_history(config))
    acked: list[tuple[int, int]] = []
    live_session = {"n": 1}

    async def main() -> None:
        service = HistoryService(store, acked.append, logging.getLogger("test.history"), raw_days=7,
                                 agg_days=365, batch_max=8, batch_wait=0.05,
                                 live=lambda token: token[1] == live_session["n"])
        stop = asyncio.Event()
        writer = asyncio.create_task(service.run_writer(stop))
        for i in range(20):
            service.take("Pico/b/json", payload("b", 1_000_000 + i, i), (i, 1))
        async with asyncio.timeout(10):
            while len(acked) < 20:
                await asyncio.sleep(0.01)
        store.down = True
        for i in range(20, 30):
            service.take("Pico/b/json", payload("b", 1_000_000 + i, i), (i, 1))
        service.take("Pico/b/json", b"not json", (99, 1))
        async with asyncio.timeout(10):
            while service.counters.snapshot()["store_errors"] < 2:
                await asyncio.sleep(0.01)
        assert len(acked) == 20, "nothing acknowledged while the store is down"
        assert service.pending == 11
        # The connection drops: at the next failed retry the lost connection's messages leave the
        # queue (their acks could not reach the broker), and the broker delivers them all again.
        live_session["n"] = 2
        errors = service.counters.snapshot()["store_errors"]
        async with asyncio.timeout(10):
            while service.counters.snapshot()["store_errors"] == errors:
                await asyncio.sleep(0.01)
        assert service.pending == 0
        for i in range(20, 30):
            service.take("Pico/b/json", payload("b", 1_000_000 + i, i), (i, 2))
        service.take("Pico/b/json", b"not json", (99, 2))
        store.down = False
        async with asyncio.timeout(15):
            while service.pending:
                await asyncio.sleep(0.01)
        stop.set()
        await writer

    asyncio.run(main())
    assert acked[:20] == [(i, 1) for i in range(20)]
    # After the outage: every message acknowledged on the connection it came on, the bad one too.
    assert acked[20:] == [(i, 2) for i in range(20, 30)] + [(99, 2)]
    rows = store.readings("b", 0, 2e9, 100)
    assert [r.seq for r in rows] == list(range(30))
    store.close()
