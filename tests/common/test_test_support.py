"""The test helpers that start real processes: ports that stay free, and waits that fail early."""
from __future__ import annotations

import sys
import time

import pytest

from tests.support.proc import Processes, ProcessExited, _ephemeral_range, free_port, wait_ready, wait_until


def test_free_ports_are_distinct_and_below_the_ephemeral_range():
    """An outgoing connection takes its local port from the ephemeral range: a port handed out
    from there could be taken by a broker client before the service under test binds it."""
    low, _ = _ephemeral_range()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= p < low for p in ports)


def test_a_process_that_dies_before_it_is_ready_fails_the_wait_at_once(tmp_path):
    procs = Processes(tmp_path)
    proc = procs.start("dies", [sys.executable, "-c",
                                "print('event=bind_failed port=1'); raise SystemExit(3)"])
    began = time.monotonic()
    with pytest.raises(ProcessExited) as failed:
        wait_ready(proc, tmp_path / "dies.log", lambda text: "event=listening" in text, 30, what="dies")
    assert time.monotonic() - began < 10
    assert "exited with 3" in str(failed.value) and "event=bind_failed" in str(failed.value)


def test_a_process_that_stays_silent_times_out_with_its_log(tmp_path):
    procs = Processes(tmp_path)
    proc = procs.start("silent", [sys.executable, "-c", "print('event=starting', flush=True); "
                                  "import time; time.sleep(60)"])
    log = tmp_path / "silent.log"
    try:
        wait_until(lambda: "event=starting" in log.read_text(), 30)
        with pytest.raises(AssertionError, match="event=starting") as failed:
            wait_ready(proc, log, lambda text: "event=listening" in text, 0.5, what="silent")
        assert not isinstance(failed.value, ProcessExited)
    finally:
        procs.stop_all()
