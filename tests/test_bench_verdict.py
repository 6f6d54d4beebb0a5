"""The throughput benchmark's v2-against-v1 verdict: which legs it compares (benchmarks/throughput.py),
and the counts it is made of."""
import subprocess
import sys

from benchmarks.stackbench import cpu_seconds
from benchmarks.throughput import LEGS, combined, neighbour_ratios, paired_ratios, per_reading


def _legs(*rates: float) -> list[dict]:
    return [{"per_second": rate, "gateway_ms": 1.0} for rate in rates]


def test_pairs_are_the_ith_leg_of_each_protocol() -> None:
    assert paired_ratios(_legs(100, 200, 400, 800), _legs(110, 180, 400, 1600), "per_second") == [
        1.1, 0.9, 1.0, 2.0]


def test_neighbours_are_the_legs_of_one_protocol_run_back_to_back() -> None:
    order = ("v1", "v2", "v2", "v1", "v1", "v2")
    legs = {"v1": _legs(1, 2, 3), "v2": _legs(10, 30, 50)}
    assert neighbour_ratios(order, legs, "per_second") == [3.0, 1.5]


def test_every_order_alternates_pairs_of_one_leg_of_each() -> None:
    for order in LEGS.values():
        assert order.count("v1") == order.count("v2") == 6
        assert all({order[i], order[i + 1]} == {"v1", "v2"} for i in range(0, len(order), 2))
        flat = {"v1": _legs(*[1] * 6), "v2": _legs(*[1] * 6)}
        assert neighbour_ratios(order, flat, "per_second") == [1.0, 1.0, 1.0]


def test_broker_calls_are_per_reading_and_rows_weigh_legs_by_readings() -> None:
    assert per_reading((100, 50), (400, 110), 20) == [15.0, 3.0]
    leg = {"readings": 0, "expected": 0, "lost": 0, "reordered": 0, "duplicated": 0, "seconds": 1.0,
           "devices": 2, "messages_per_reading": 8.0, "cpu_ms": {"gateway": 1.0}, "per_second": 1.0}
    row = combined([{**leg, "readings": 100, "broker_calls": [30.0, 10.0]},
                    {**leg, "readings": 300, "broker_calls": [34.0, 12.0]}])
    assert row["broker_calls"] == [33.0, 11.5]


SPIN_IN_A_THREAD = """
import sys, threading, time
def spin():
    start = time.thread_time()
    while time.thread_time() - start < 0.15:
        pass
worker = threading.Thread(target=spin)
worker.start()
worker.join()
print(time.process_time(), flush=True)
sys.stdin.readline()
"""


def test_cpu_seconds_are_another_process_s_whole_cpu_time_ended_threads_included() -> None:
    child = subprocess.Popen([sys.executable, "-c", SPIN_IN_A_THREAD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        own_count = float(child.stdout.readline())  # after the thread ended; then it waits on stdin
        measured = cpu_seconds([child.pid])
        assert own_count >= 0.15
        assert own_count <= measured < own_count + 0.005  # not 10 ms clock ticks
    finally:
        child.stdin.close()
        child.wait(10)
