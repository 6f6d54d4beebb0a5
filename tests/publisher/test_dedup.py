import json
import os
import stat
import subprocess
import sys
from array import array
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.publisher.dedup import (
    SEQ_WINDOW,
    DedupFileError,
    DuplicateWindow,
    RecentWindow,
    SeqWindow,
    _holds,
    load,
    save,
    stable_digest,
)


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
    window = DuplicateWindow(recent=RecentWindow(window=3))
    for n in range(5):  # the ring wrapped: only 2, 3, 4 are left, 2 the oldest
        window.seen("a", ("uid", f"p:{n}"))
    window.seen("b", ("uid", "x"))
    for seq in (7, 9, 9 + SEQ_WINDOW - 1):
        window.seen("a", ("seq", 1, seq))
    window.seen("a", ("seq", None, 3))
    path = tmp_path / "dedup.json"
    save(window, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = DuplicateWindow(recent=RecentWindow(window=3))
    assert load(path, again) == 4
    assert [again.seen("a", ("uid", f"p:{n}")) for n in (2, 3, 4)] == [True, True, True]
    assert again.seen("b", ("uid", "x")) and not again.seen("a", ("uid", "p:0"))
    assert not again.seen("a", ("uid", "p:9"))  # new: it evicts the oldest (2), as the first window would
    assert not again.seen("a", ("uid", "p:2"))
    assert [again.seen("a", ("seq", 1, s)) for s in (9, 9 + SEQ_WINDOW - 1, 8)] == [True, True, False]
    assert not again.seen("a", ("seq", 1, 7))  # the oldest seq the window held is beyond it now
    assert again.seen("a", ("seq", None, 3)) and not again.seen("a", ("seq", 2, 3))


def test_a_window_saved_by_the_earlier_version_loads_as_the_uid_window(tmp_path) -> None:
    path = tmp_path / "dedup.json"
    path.write_text(json.dumps({"a": [stable_digest(("uid", "p:1"))]}))
    window = DuplicateWindow()
    assert load(path, window) == 1 and window.seen("a", ("uid", "p:1"))


def test_no_file_is_an_empty_window_and_a_bad_one_is_a_clear_error(tmp_path) -> None:
    window = DuplicateWindow()
    assert load(tmp_path / "absent.json", window) == 0 and len(window) == 0
    too_big = '{"a": [18446744073709551616]}'
    seqs = '{"recent": {}, "seqs": [%s]}'
    bad_seqs = ['["a", null, -1, "1"]', '["a", "1", 5, "1"]', '["a", null, 5, "xyz"]', '["a", null, 5, ""]',
                '["a", null, 5, "%s"]' % ("f" * (SEQ_WINDOW // 4 + 1)), '["a", null, 5]', '[1, null, 5, "1"]',
                '["a", null, 5.0, "1"]', '["a", true, 5, "1"]', '"a"']
    for bad in ("{", "[]", '{"a": [1.5]}', '{"a": [true]}', '{"a": 3}', too_big, "\xff",
                '{"recent": [], "seqs": []}', '{"recent": {}, "seqs": {}}', *(seqs % b for b in bad_seqs)):
        path = tmp_path / "bad.json"
        path.write_text(bad, encoding="latin-1")
        with pytest.raises(DedupFileError, match="bad.json"):
            load(path, window)
    assert len(window) == 0


def test_a_resend_is_recognised_however_many_readings_came_between() -> None:
    """During a bus outage each proxy holds its devices' readings and delivers them when the broker
    is back, one proxy's backlog after the other's: a device's two copies of a reading came
    hundreds of its readings apart, and the last-128 window had forgotten the first."""
    window = DuplicateWindow()
    assert not any(window.seen("d", ("seq", 1, seq)) for seq in range(56, 56 + 1000))
    assert all(window.seen("d", ("seq", 1, seq)) for seq in range(56, 56 + 1000))
    assert not window.seen("d", ("seq", 2, 56))  # a rotated key's seqs start again: published


def test_seq_window_is_bounded_in_entries_and_a_jump_past_it_forgets_all() -> None:
    window = SeqWindow(max_entries=2)
    assert not window.seen("a", 1, 10) and not window.seen("b", 1, 10)
    assert not window.seen("c", 1, 10)  # evicts ("a", 1), the first added
    assert len(window) == 2 and not window.seen("a", 1, 10)
    assert not window.seen("b", 1, 10 + 10 * SEQ_WINDOW) and not window.seen("b", 1, 10)


def _reference(seen: dict, newest: dict, key: tuple, seq: int) -> bool:
    """The rule: a seq seen before is a duplicate while fewer than SEQ_WINDOW seqs above it
    were seen since; anything else is new (and remembered)."""
    known = seen.setdefault(key, set())
    top = newest.get(key, seq)
    duplicate = seq in known and top - seq < SEQ_WINDOW
    known.add(seq)
    newest[key] = max(top, seq)
    return duplicate


_SEQS = st.one_of(st.integers(0, 50), st.integers(0, 3 * SEQ_WINDOW),
                  st.sampled_from([SEQ_WINDOW - 1, SEQ_WINDOW, SEQ_WINDOW + 1, 2 * SEQ_WINDOW, 2**32 - 1]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from([None, 1, 2]), _SEQS), max_size=300))
def test_seq_window_answers_as_the_rule_for_any_stream(stream) -> None:
    window, seen, newest = SeqWindow(), {}, {}
    for device, gen, seq in stream:
        assert window.seen(device, gen, seq) == _reference(seen, newest, (device, gen), seq)


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
