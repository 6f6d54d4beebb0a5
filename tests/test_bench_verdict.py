"""The throughput benchmark's v2-against-v1 verdict: which legs it compares (benchmarks/throughput.py)."""
from benchmarks.throughput import LEGS, neighbour_ratios, paired_ratios


def _legs(*rates: float) -> list[dict]:
    return [{"per_second": rate, "gateway_ms": 1.0} for rate in rates]


def test_pairs_are_the_ith_leg_of_each_protocol() -> None:
    assert paired_ratios(_legs(100, 200, 400, 800), _legs(110, 180, 400, 1600), "per_second") == [
        1.1, 0.9, 1.0, 2.0]


def test_neighbours_are_the_legs_of_one_protocol_run_back_to_back() -> None:
    legs = {"v1": _legs(1, 2, 3, 6), "v2": _legs(10, 30, 50, 70)}
    # 20 devices: v1 v2 v2 v1 v2 v1 v1 v2 -> v2's first two, v1's last two
    assert neighbour_ratios(LEGS[20], legs, "per_second") == [3.0, 2.0]
    # 100 devices: v2 v1 v1 v2 v1 v2 v2 v1 -> v1's first two, v2's third and fourth
    assert neighbour_ratios(LEGS[100], legs, "per_second") == [2.0, 1.4]


def test_every_order_has_two_neighbouring_pairs_and_four_legs_of_each() -> None:
    for order in LEGS.values():
        assert order.count("v1") == order.count("v2") == 4
        assert neighbour_ratios(order, {"v1": _legs(1, 1, 1, 1), "v2": _legs(1, 1, 1, 1)}, "per_second") == [
            1.0, 1.0]
