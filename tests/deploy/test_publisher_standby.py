"""Publisher active/standby on Mosquitto (services/publisher/lease.py), and the EMQX shared mode."""
from __future__ import annotations

import asyncio
import signal
import sys

from services.publisher import lease
from services.publisher.transport import SUBSCRIPTIONS
from tests.support.proc import wait_until


def test_one_holder_at_a_time_and_release_hands_over(tmp_path):
    path = tmp_path / "run" / "publisher.lock"
    a, b = lease.FileLease(path), lease.FileLease(path)
    assert a.try_acquire()
    assert not b.try_acquire()
    a.release()
    assert b.try_acquire()
    b.release()


def test_the_lease_is_freed_when_its_holder_is_killed(tmp_path, procs):
    path = tmp_path / "publisher.lock"
    code = ("import sys, time; from pathlib import Path; from services.publisher.lease import FileLease; "
            f"assert FileLease(Path({str(path)!r})).try_acquire(); print('held', flush=True); time.sleep(60)")
    holder = procs.start("holder", [sys.executable, "-c", code])
    log = tmp_path / "proclogs" / "holder.log"
    wait_until(lambda: "held" in log.read_text(), 10, what="holder")
    standby = lease.FileLease(path)
    assert not standby.try_acquire()
    assert standby.holder() == holder.pid
    procs.stop(holder, signal.SIGKILL)

    async def take_over() -> bool:
        return await asyncio.wait_for(standby.acquire(asyncio.Event(), interval=0.02), 5)

    assert asyncio.run(take_over())


def test_a_waiting_standby_stops_on_sigterm_without_the_lease(tmp_path):
    path = tmp_path / "publisher.lock"
    active, standby = lease.FileLease(path), lease.FileLease(path)
    assert active.try_acquire()

    async def wait_then_stop() -> bool:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.1, stop.set)
        return await standby.acquire(stop, interval=0.02)

    assert asyncio.run(wait_then_stop()) is False


def test_shared_subscriptions_for_emqx():
    assert lease.shared(SUBSCRIPTIONS) == [(f"$share/publishers/{t}", q) for t, q in SUBSCRIPTIONS]
    assert ("$share/publishers/medsec/ingest/+", 1) in lease.shared(SUBSCRIPTIONS)
