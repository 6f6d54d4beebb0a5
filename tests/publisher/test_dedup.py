from services.publisher.dedup import RecentWindow


def test_second_sighting_is_a_duplicate_per_device() -> None:
    window = RecentWindow(window=4)
    assert not window.seen("a", ("uid", "p:1"))
    assert window.seen("a", ("uid", "p:1"))
    assert not window.seen("b", ("uid", "p:1"))  # another device's key space
    assert not window.seen("a", ("seq", 1))
    assert window.seen("a", ("seq", 1))


def test_window_is_bounded_per_device_and_in_devices() -> None:
    window = RecentWindow(window=3, max_devices=2)
    for seq in range(5):
        assert not window.seen("a", ("seq", seq))
    assert window.seen("a", ("seq", 4)) and window.seen("a", ("seq", 2))
    assert not window.seen("a", ("seq", 0))  # fell out of the 3-entry window
    window.seen("b", ("seq", 0))
    window.seen("c", ("seq", 0))  # evicts "a", the oldest device
    assert len(window) == 2
    assert not window.seen("a", ("seq", 4))
