"""Publisher active/standby on Mosquitto (services/publisher/lease.py), and the EMQX shared mode."""
from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid

from services.publisher import lease
from services.publisher.transport import SUBSCRIPTIONS
from tests.support.broker import Subscriber
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


def test_shared_mode_splits_the_ingest_between_two_publishers(config, config_env, broker, procs, tmp_path):
    """MEDSEC_PUBLISHER_SHARED=1 (the EMQX mode), shown on Mosquitto: two publishers with their own
    ids join $share/publishers/... and run at once (no lease); every reading is published once."""
    env = {**config_env, "MEDSEC_PUBLISHER_SHARED": "1"}
    for n in (1, 2):
        procs.start(f"pub{n}", [sys.executable, "-m", "services.publisher"],
                    env={**env, "MEDSEC_PUBLISHER_ID": f"t{n}"})
    logs = [tmp_path / "proclogs" / f"pub{n}.log" for n in (1, 2)]
    wait_until(lambda: all("bus_subscribed" in p.read_text() for p in logs), 15, what="both subscribed")
    assert all("$share/publishers/medsec/ingest/+" in p.read_text() for p in logs)
    assert not any("event=standby" in p.read_text() for p in logs), "no lease in shared mode"
    dash, proxy = Subscriber(config, "dashboard"), Subscriber(config, "proxy")
    try:
        dash.subscribe("Pico/+/json")
        device = f"sh{uuid.uuid4().hex[:8]}"
        values = {"Temp": "36.600", "TempMcu": "23.700", "PulseSig": "2.123", "Acel_x": "-0.01",
                  "Acel_y": "0.000", "Acel_z": "1.002", "TempMpu": "23.400"}
        for seq in range(1, 41):
            msg = {"device": device, "ts": 1763790000.0 + seq, "seq": seq, "protocol": "v2",
                   "values": values, "src": ["10.0.0.1", 40000], "gw": ["127.0.0.1", 9998],
                   "uid": f"t:{seq}"}
            topic = f"medsec/ingest/{device}"
            proxy.client.publish(topic, json.dumps(msg).encode(), qos=1).wait_for_publish(5)
        wait_until(lambda: len(dash.on(f"Pico/{device}/json")) >= 40, 15, what="40 readings published")
        seqs = sorted(json.loads(p)["seq"] for p in dash.on(f"Pico/{device}/json"))
        assert seqs == list(range(1, 41))
    finally:
        dash.close()
        proxy.close()
