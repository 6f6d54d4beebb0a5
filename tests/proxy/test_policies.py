"""The proxy's device-path policies as pure objects (real-process tests: test_replay.py,
test_limits.py, test_proxy_protocol.py): rate limit, replay memory, duplicate strikes,
report pacing, start slots of a refused address, trusted balancers."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.config import Config
from services.proxy.probation import Probation
from services.proxy.ratelimit import DeviceRateLimit
from services.proxy.replay import V2_RESEND, DuplicateGuard, ReplayMemory
from services.proxy.reporter import Reporter
from services.proxy.trust import LOOPBACK, parse_trusted, trusted


# --- rate limit ---
@pytest.mark.parametrize("rate,burst", [(1.0, 1), (5.0, 10), (10.0, 20), (0.5, 3)])
def test_a_flood_gets_the_burst_then_the_rate(rate, burst):
    limit = DeviceRateLimit(rate, burst)
    passed, now = 0, 0.0
    for _ in range(10_000):  # 10 s of a 1,000 readings/s flood
        passed += limit.allow("d", now)
        now += 0.001
    assert burst + rate * 10 - 1 <= passed <= burst + rate * 10 + 1


def test_a_device_at_its_own_pace_is_never_limited_and_devices_are_separate():
    limit = DeviceRateLimit(2.0, 4)
    assert all(limit.allow("slow", t * 1.0) for t in range(100))  # 1/s under a 2/s limit
    for _ in range(4):
        assert limit.allow("a", 0.0)
    assert not limit.allow("a", 0.0)
    assert limit.allow("b", 0.0)  # another device: its own bucket
    assert limit.allow("a", 0.5)  # tokens come back at the rate


def test_rate_zero_is_off_and_the_table_is_bounded():
    assert all(DeviceRateLimit(0, 1).allow("d", 0.0) for _ in range(1000))
    limit = DeviceRateLimit(1.0, 1, max_devices=100)
    for n in range(1000):
        limit.allow(f"d{n}", 0.0)
    assert len(limit._buckets) <= 100


# --- replay memory ---
def test_the_same_reading_within_the_window_is_a_replay_and_after_it_is_not():
    memory = ReplayMemory(window=60)
    assert not memory.seen("d", 1, 0.0)
    assert memory.seen("d", 1, 59.0)
    assert not memory.seen("other", 1, 59.0)  # per device
    assert not memory.seen("d", 1, 60.5)  # forgotten after the window, then remembered again
    assert memory.seen("d", 1, 61.0)


def test_a_stream_of_distinct_readings_is_never_a_replay_and_memory_stays_bounded():
    memory = ReplayMemory(window=600, per_device=100)
    assert not any(memory.seen("d", n, n * 0.01) for n in range(10_000))
    recent = memory._devices["d"]
    assert len(recent.times) - recent.start <= 100 and len(recent.times) <= 2 * 100 + 64


def test_a_replayed_sequence_is_caught_whatever_its_order():
    memory = ReplayMemory(window=600)
    for n in range(20):
        memory.seen("d", n, float(n))
    assert all(memory.seen("d", n, 30.0) for n in reversed(range(20)))


def _reference_seen(kept: list[tuple[float, int]], fingerprint: int, now: float, window: float,
                    limit: int) -> bool:
    """The rule as first written: forget what is older than the window and all but the newest
    limit - 1, then a print among the rest is a replay; otherwise remember it."""
    while kept and (kept[0][0] <= now - window or len(kept) >= limit):
        kept.pop(0)
    if any(p == fingerprint for _, p in kept):
        return True
    kept.append((now, fingerprint))
    return False


# Prints from a small pool (replays are frequent) and from the whole signed 64-bit range that
# hash() gives, times that stand still or jump past the window.
_prints = st.one_of(st.integers(0, 40), st.integers(-2**63, 2**63 - 1),
                    st.sampled_from([-1, -2**63, 2**63 - 1, 256, 255 << 8]))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), _prints, st.sampled_from([0.0, 0.01, 1.0, 7.0])),
                max_size=400),
       st.sampled_from([5.0, 30.0, 600.0]), st.sampled_from([1, 2, 3, 50, 1024]))
def test_replay_memory_answers_as_the_rule_for_any_stream(stream, window, limit):
    memory = ReplayMemory(window=window, per_device=limit)
    kept: dict[str, list[tuple[float, int]]] = {"a": [], "b": []}
    now = 0.0
    for device, fingerprint, step in stream:
        now += step
        assert memory.seen(device, fingerprint, now) == _reference_seen(
            kept[device], fingerprint, now, window, limit)


def test_a_print_that_straddles_two_others_is_not_a_replay():
    memory = ReplayMemory(window=600)
    first, second = 0x1111111011111110, 0x2222222222222220  # both in bucket 0
    assert not memory.seen("d", first, 0.0) and not memory.seen("d", second, 1.0)
    straddle = int.from_bytes(first.to_bytes(8, "little")[4:] + second.to_bytes(8, "little")[:4], "little")
    assert straddle % 16 == 0 and not memory.seen("d", straddle, 2.0)
    assert memory.seen("d", straddle, 3.0) and memory.seen("d", first, 3.0)


def test_window_zero_is_off():
    memory = ReplayMemory(window=0)
    assert not memory.seen("d", 1, 0.0) and not memory.seen("d", 1, 0.0)


# --- duplicate strikes ---
def test_replayed_v1_readings_close_after_the_limit():
    guard = DuplicateGuard(3)
    assert [guard.duplicate(None) for _ in range(3)] == [False, False, True]


def test_a_v2_resend_after_reconnect_is_forgiven_up_to_a_window():
    guard = DuplicateGuard(3)
    assert not any(guard.duplicate(seq) for seq in range(100, 100 + V2_RESEND))  # oldest first
    guard.fresh(100 + V2_RESEND)
    assert guard.strikes == 0
    more = DuplicateGuard(3)
    results = [more.duplicate(seq) for seq in range(V2_RESEND + 3)]
    assert results[-1] and not any(results[:-1])  # beyond a window of resends: strikes


@pytest.mark.parametrize("pattern", [[5, 5, 5], [5, 4, 3], [7, 8, 2, 2], [1, 9, 9, 9]])
def test_the_same_or_an_older_seq_again_is_a_strike(pattern):
    guard = DuplicateGuard(2)
    results = [guard.duplicate(seq) for seq in pattern]
    assert results[-1] and results.count(True) == 1 + (len(pattern) - 1 - results.index(True))


def test_after_a_new_reading_a_duplicate_at_or_below_it_is_a_strike_and_limit_zero_never_closes():
    guard = DuplicateGuard(1)
    guard.fresh(10)
    assert guard.duplicate(10)
    never = DuplicateGuard(0)
    assert not any(never.duplicate(None) for _ in range(100))


# --- reports ---
def test_reports_come_once_per_interval_with_the_count():
    reporter = Reporter(interval=5.0)
    assert reporter.due("d", "replay", 0.0) == 1
    assert [reporter.due("d", "replay", t / 10) for t in range(1, 40)] == [None] * 39
    assert reporter.due("d", "rate_limited", 1.0) == 1  # another reason: its own pace
    assert reporter.due("d", "replay", 5.0) == 40


# --- start slots of a refused address ---
def test_a_refused_address_starts_one_connection_per_grace_in_arrival_order():
    slots = Probation(grace=2.0, queue=4)
    starts = [slots.slot("10.0.0.1", 0.0) for _ in range(6)]
    assert starts == [0.0, 2.0, 4.0, 6.0, None, None]  # four wait at most; more are refused
    assert slots.slot("10.0.0.2", 0.0) == 0.0  # other addresses are independent
    assert slots.slot("10.0.0.1", 100.0) == 100.0  # idle again: at once


def test_a_good_device_behind_a_sequential_guesser_waits_at_most_two_slots():
    slots = Probation(grace=1.0, queue=8)
    now, guesser_at = 0.0, slots.slot("nat", 0.0)
    good = None
    for _ in range(50):  # the guesser asks again the moment its slot started
        now = guesser_at
        if good is None and now >= 3.3:
            good = (now, slots.slot("nat", now))
        guesser_at = slots.slot("nat", now)
    asked, start = good
    assert start is not None and start - asked <= 2 * 1.0


def test_grace_zero_refuses_as_before():
    assert Probation(grace=0, queue=8).slot("a", 0.0) is None


# --- trusted balancers ---
def test_trusted_list_parses_addresses_and_networks_of_both_families():
    nets = parse_trusted(" 10.0.0.5, 10.1.0.0/16,fd00::/8 ,::1")
    assert nets == (ipaddress.ip_network("10.0.0.5/32"), ipaddress.ip_network("10.1.0.0/16"),
                    ipaddress.ip_network("fd00::/8"), ipaddress.ip_network("::1/128"))
    assert trusted("10.0.0.5", nets) and trusted("10.1.200.3", nets) and trusted("fd12::1", nets)
    assert trusted("::ffff:10.1.0.9", nets)  # IPv4 peer on a dual-stack socket
    assert not trusted("10.0.0.6", nets) and not trusted("192.168.1.1", nets)
    assert not trusted("fe80::1", nets) and not trusted("not-an-ip", nets) and not trusted("", nets)


def test_unset_trusts_loopback_only():
    assert parse_trusted("") == LOOPBACK == parse_trusted("  ")
    assert trusted("127.0.0.1", LOOPBACK) and trusted("::1", LOOPBACK)
    assert not trusted("10.0.0.1", LOOPBACK) and not trusted("::2", LOOPBACK)


@pytest.mark.parametrize("bad", ["10.0.0.300", "10.0.0.0/33", "lb.example", "10.0.0.1;rm", ",", "*",
                                 "1.2.3.4/8/8", "fd00::/129"])
def test_a_bad_trusted_list_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="MEDSEC_PROXY_TRUSTED"):
        parse_trusted(bad)


@pytest.mark.parametrize("bad", ["10.0.0.300", "lb", ",", "::g"])
def test_the_config_refuses_a_bad_trusted_list_at_start(bad, tmp_path):
    with pytest.raises(ValueError, match="MEDSEC_PROXY_TRUSTED"):
        Config.from_env({"MEDSEC_HOME": str(tmp_path), "MEDSEC_PROXY_TRUSTED": bad})
    assert Config.from_env({"MEDSEC_HOME": str(tmp_path), "MEDSEC_PROXY_TRUSTED": "10.0.0.1"}).proxy_trusted
