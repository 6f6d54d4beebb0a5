import os
import stat
import subprocess
import sys
from array import array
from random import Random

import pytest

from services.publisher.dedup import DedupFileError, RecentWindow, _holds, load, save, stable_digest


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


def test_digests_are_the_same_in_another_process() -> None:
    """str hashes change per process (PYTHONHASHSEED); a saved window must mean the same after a restart."""
    code = ("from services.publisher.dedup import stable_digest as d; "
            "print(d(('uid', 'p:1')), d(('seq', 3, 41)), d(('seq', None, 41)))")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in (1, 2)}
    assert len(runs) == 1
    keys = (("uid", "p:1"), ("seq", 3, 41), ("seq", None, 41))
    assert runs.pop().split() == [str(stable_digest(k)) for k in keys]


def test_a_saved_window_is_the_same_window_after_loading(tmp_path) -> None:
    window = RecentWindow(window=3)
    for seq in range(5):  # the ring wrapped: only 2, 3, 4 are left, 2 the oldest
        window.seen("a", ("seq", 1, seq))
    window.seen("b", ("uid", "x"))
    path = tmp_path / "dedup.json"
    save(window, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = RecentWindow(window=3)
    assert load(path, again) == 2
    assert [again.seen("a", ("seq", 1, s)) for s in (2, 3, 4)] == [True, True, True]
    assert again.seen("b", ("uid", "x")) and not again.seen("a", ("seq", 1, 0))
    assert not again.seen("a", ("seq", 1, 9))  # new: it evicts the oldest (2), as the first window would
    assert not again.seen("a", ("seq", 1, 2))


def test_no_file_is_an_empty_window_and_a_bad_one_is_a_clear_error(tmp_path) -> None:
    window = RecentWindow()
    assert load(tmp_path / "absent.json", window) == 0 and len(window) == 0
    too_big = '{"a": [18446744073709551616]}'
    for bad in ("{", "[]", '{"a": [1.5]}', '{"a": [true]}', '{"a": 3}', too_big, "\xff"):
        path = tmp_path / "bad.json"
        path.write_text(bad, encoding="latin-1")
        with pytest.raises(DedupFileError, match="bad.json"):
            load(path, window)
    assert len(window) == 0


def test_a_digest_is_found_only_as_a_whole_entry_of_the_window() -> None:
    """The window is searched as bytes: a digest whose bytes straddle two entries is not in it."""
    rnd = Random(3)
    patterned = [0, -1, 1, 0x0101010101010101, 0x0100000000000000, 256, 2**63 - 1, -(2**63)]
    for _ in range(5000):
        entries = [rnd.choice([rnd.randrange(-2**63, 2**63), rnd.choice(patterned)])
                   for _ in range(rnd.randrange(0, 130))]
        hashes = array("q", entries)
        for probe in (rnd.choice(entries or [0]), rnd.randrange(-2**63, 2**63), rnd.choice(patterned)):
            assert _holds(hashes, probe) == (probe in entries)
    straddling = array("q", [0x0200000000000000, 0x01])  # bytes 7..14 read as 0x0102 (little-endian)
    assert not _holds(straddling, int.from_bytes(straddling.tobytes()[7:15], sys.byteorder, signed=True))
