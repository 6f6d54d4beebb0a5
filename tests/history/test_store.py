"""The history store's contract, the same on SQLite and on a real PostgreSQL."""
from __future__ import annotations

import random
import statistics

import pytest

from services.common.v1 import FIELDS
from services.history.readings import Row
from services.history.store import (
    DAY,
    HistoryStoreError,
    HistoryUnavailable,
    cursor_of,
    open_history,
)


def row(device: str, ts: float, seq: int | None, base: float = 36.0) -> Row:
    return Row(device=device, ts=ts, seq=seq, protocol="v1" if seq is None else "v2",
               values=(base, 30.0, 1.5, 0.1, -0.2, 0.98, 31.0))


def test_rows_come_back_exactly_in_time_order(history):
    rng = random.Random(7)
    rows = [row("bed-12", 1_700_000_000 + i * 0.1 + rng.random() / 100, i, 35 + rng.random())
            for i in range(300)]
    shuffled = rows[:]
    rng.shuffle(shuffled)
    assert history.add(shuffled[:150]) == 150
    assert history.add(shuffled[150:]) == 150
    got = history.readings("bed-12", 0, 2e9, 1000)
    assert got == sorted(rows, key=lambda r: r.ts)


def test_copies_are_never_stored_twice(history):
    v2 = [row("d2", 1_700_000_000.25 + i, i) for i in range(20)]
    v1 = [row("d1", 1_700_000_000.5 + i, None) for i in range(20)]
    assert history.add(v2 + v1) == 40
    # a redelivered batch, and a batch mixing old and new rows
    assert history.add(v2 + v1) == 0
    assert history.add(v2[:5] + [row("d2", 1_800_000_000.0, 99)]) == 1
    assert len(history.readings("d2", 0, 2e9, 1000)) == 21
    assert len(history.readings("d1", 0, 2e9, 1000)) == 20
    # copies add nothing to the aggregates either
    assert sum(m.n for m in history.minutes("d1", 0, 2e9, 1000)) == 20


def test_same_seq_at_another_time_is_another_reading(history):
    # a v2 seq starts again under a rotated key: same seq, new ts, a new reading
    assert history.add([row("rot", 1_700_000_000.0, 1), row("rot", 1_700_000_100.0, 1)]) == 2
    # two v1 readings (seq null) of one device at different times
    assert history.add([row("v1", 1_700_000_000.0, None), row("v1", 1_700_000_000.001, None)]) == 2


def test_range_is_half_open_and_per_device(history):
    history.add([row("a", 100.0 + i, i) for i in range(10)] + [row("b", 100.0 + i, i) for i in range(10)])
    got = history.readings("a", 102.0, 105.0, 100)
    assert [r.ts for r in got] == [102.0, 103.0, 104.0]
    assert all(r.device == "a" for r in got)
    assert history.readings("nobody", 0, 1e10, 100) == []
    assert history.readings("a", 105.0, 102.0, 100) == []


def test_pages_cover_the_range_without_gaps_or_repeats(history):
    # equal timestamps with different seqs must not be lost at a page boundary
    rows = [row("p", 1000.0 + (i // 3), i) for i in range(100)]
    history.add(rows)
    seen, after = [], None
    while True:
        page = history.readings("p", 0, 1e10, 7, after)
        if not page:
            break
        seen += page
        after = cursor_of(page[-1])
    assert seen == rows


def test_minutes_match_the_raw_rows(history):
    rng = random.Random(3)
    start = 1_700_000_040.0  # not on a minute: the first minute is partial
    rows = []
    for i in range(600):
        values = tuple(round(rng.uniform(lo, hi), 3) for lo, hi in
                       ((30, 40), (20, 50), (0, 3.3), (-2, 2), (-2, 2), (-2, 2), (20, 50)))
        rows.append(Row("agg", start + i * 0.5, i, "v2", values))
    for i in range(0, 600, 37):  # batches that straddle minutes
        history.add(rows[i:i + 37])
    minutes = history.minutes("agg", 0, 2e9, 100)
    by_minute: dict[int, list[Row]] = {}
    for r in rows:
        by_minute.setdefault(int(r.ts // 60) * 60, []).append(r)
    assert [m.minute for m in minutes] == sorted(by_minute)
    for m in minutes:
        members = by_minute[m.minute]
        assert m.n == len(members)
        for i, _ in enumerate(FIELDS):
            col = [r.values[i] for r in members]
            assert m.low[i] == min(col)
            assert m.high[i] == max(col)
            assert m.mean[i] == pytest.approx(statistics.fmean(col), abs=1e-9)
    # paging by minute
    first = history.minutes("agg", 0, 2e9, 2)
    rest = history.minutes("agg", 0, 2e9, 100, after=first[-1].minute)
    assert [m.minute for m in first + rest] == [m.minute for m in minutes]


def test_retention_drops_what_is_older(history):
    now = 1_800_000_000.0
    old_raw = [row("r", now - 8 * DAY + i, i) for i in range(5)]
    kept_raw = [row("r", now - 6 * DAY + i, 100 + i) for i in range(5)]
    ancient = [row("r", now - 400 * DAY + i, 200 + i) for i in range(5)]
    history.add(old_raw + kept_raw + ancient)
    raw, minutes = history.prune(now, raw_days=7, agg_days=365)
    assert raw == 10
    assert minutes == 1
    assert history.readings("r", 0, 2e9, 100) == kept_raw
    left = history.minutes("r", 0, 2e9, 100)
    assert [m.minute for m in left] == sorted({int(r.ts // 60) * 60 for r in old_raw + kept_raw})
    assert history.prune(now, 7, 365) == (0, 0)


def test_readonly_store_reads_and_refuses_writes(history, history_config):
    history.add([row("ro", 10.0, 1)])
    reader = open_history(history_config, readonly=True)
    try:
        assert reader.readings("ro", 0, 100, 10) == [row("ro", 10.0, 1)]
        with pytest.raises(HistoryStoreError):
            reader.add([row("ro", 11.0, 2)])
        with pytest.raises(HistoryStoreError):
            reader.prune(1e10, 1, 1)
        history.add([row("ro", 12.0, 3)])  # the writer goes on; the reader sees it
        assert len(reader.readings("ro", 0, 100, 10)) == 2
    finally:
        reader.close()


def test_readonly_open_without_a_store_says_so(config):
    with pytest.raises(HistoryUnavailable):
        open_history(config, readonly=True)
    assert not config.history_path.exists()


def test_store_errors_never_show_the_password(config, pg_server):
    import dataclasses

    url = pg_server.url().replace(pg_server.password, "s3cret-not-shown")
    with pytest.raises(HistoryStoreError) as info:
        open_history(dataclasses.replace(config, history_url=url))
    assert "s3cret-not-shown" not in str(info.value)
    with pytest.raises(HistoryStoreError):
        open_history(dataclasses.replace(config, history_url="mysql://x/y"))
