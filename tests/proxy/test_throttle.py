"""Failed-identification throttling as a pure object (the real-process test is in test_limits.py)."""
from services.proxy.throttle import Throttle


def test_blocks_after_n_failures_within_the_window():
    t = Throttle(failures=3, window=10, cooldown=30, max_cooldown=100)
    assert t.failure("10.0.0.1", 0) is None
    assert t.failure("10.0.0.1", 1) is None
    block = t.failure("10.0.0.1", 2)
    assert block is not None and block.seconds == 30
    assert t.blocked("10.0.0.1", 2) and t.blocked("10.0.0.1", 31.9)
    assert not t.blocked("10.0.0.1", 32.1)
    assert not t.blocked("10.0.0.2", 2)  # other addresses unaffected


def test_failures_outside_the_window_do_not_add_up():
    t = Throttle(failures=3, window=10, cooldown=30, max_cooldown=100)
    for now in (0, 11, 22, 33):
        assert t.failure("a", now) is None
    assert not t.blocked("a", 33)


def test_cooldown_doubles_up_to_the_maximum_and_resets_after_quiet():
    t = Throttle(failures=1, window=10, cooldown=30, max_cooldown=100)
    seconds, now = [], 0.0
    for _ in range(4):
        block = t.failure("a", now)
        seconds.append(block.seconds)
        now += block.seconds + 1
    assert seconds == [30, 60, 100, 100]
    assert t.failure("a", now + 500).seconds == 30


def test_switched_off_with_zero_failures():
    t = Throttle(failures=0, window=10, cooldown=30, max_cooldown=100)
    assert all(t.failure("a", i) is None for i in range(100))
    assert not t.blocked("a", 100)


def test_table_is_bounded():
    t = Throttle(failures=5, window=10, cooldown=30, max_cooldown=100, max_entries=100)
    for i in range(1000):
        t.failure(f"10.0.{i // 256}.{i % 256}", i * 0.001)
    assert len(t._table) <= 100
