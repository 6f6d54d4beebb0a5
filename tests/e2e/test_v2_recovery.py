"""Issue 4, "Done when" 4: kill the publisher, then the broker, while 20 v2 devices stream; restart them.

Every reading a device saw acknowledged arrives on Pico/<id>/json (checked by
seq) exactly once when the publisher is stopped (SIGTERM); when it is killed
(SIGKILL), the readings it was handling at that instant may arrive twice (the
publisher is at least once), never more, and none is lost. The devices send
again what was not acknowledged.
"""
from __future__ import annotations

import asyncio
import signal
import sys
import threading
import uuid

import pytest

from services.sim.runner import SimOptions, Simulation
from services.sim.v2 import V2Device, seq_counter
from tests.support.broker import SeqDashboard, start_mosquitto
from tests.support.proc import port_open, wait_until
from tests.support.stores import add_v2_devices

DEVICES = 20
RATE = 10.0


def start(procs, name: str, env: dict[str, str], tmp_path, ready: str):
    proc = procs.start(name, [sys.executable, "-m", f"services.{name}"], env=env)
    log = tmp_path / "proclogs" / f"{name}.log"
    before = log.read_text().count(ready) if log.exists() else 0
    wait_until(lambda: log.read_text().count(ready) > before, 15, what=f"{name}: {ready}")
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_acknowledged_readings_survive_publisher_and_broker_restarts(config, config_env, procs, broker,
                                                                    tmp_path, sig):
    env = {**config_env, "MEDSEC_BUS_TIMEOUT": "1.5"}
    creds = add_v2_devices(config, f"rv{uuid.uuid4().hex[:6]}", DEVICES)
    procs.start("auth", [sys.executable, "-m", "services.auth"], env=env)
    wait_until(lambda: config.auth_socket.exists(), 10, what="auth socket")
    proxy = start(procs, "proxy", env, tmp_path, "event=bus_subscribed")
    publisher = start(procs, "publisher", env, tmp_path, "bus_subscribed")
    dashboard = SeqDashboard(config, persistent=True)

    devices = [V2Device(c, counter=seq_counter(None)) for c in creds]
    options = SimOptions(port=config.proxy_port, rate=RATE, min_backoff=0.05, max_backoff=0.5)
    sim = Simulation(devices, options)
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=lambda: loop.run_until_complete(sim.run()), daemon=True)
    runner.start()
    try:
        wait_until(lambda: sim.stats.acked >= DEVICES * 5, 10, what="readings acknowledged")
        procs.stop(publisher, sig)
        # Everything the dead publisher may have handled was acknowledged by now (a superset on purpose).
        before_kill = {d.id: set(d.acked_seqs) for d in devices}
        acked_before = sim.stats.acked
        wait_until(lambda: sim.stats.acked >= acked_before + DEVICES * 3, 10,
                   what="acks while the publisher is down (the broker queues for it)")
        procs.stop(broker)  # the broker saves its persistent sessions as it stops
        wait_until(lambda: sim.stats.errors >= DEVICES, 10, what="devices cut off without acks")
        broker_again = start_mosquitto(config, procs)
        assert broker_again.poll() is None
        start(procs, "publisher", env, tmp_path, "bus_subscribed")
        wait_until(lambda: sim.stats.resent > 0, 15, what="devices sending unacknowledged readings again")
        resumed = sim.stats.acked
        wait_until(lambda: sim.stats.acked >= resumed + DEVICES * 5, 15, what="acks after the restarts")
    finally:
        loop.call_soon_threadsafe(sim.stop)
        runner.join(15)
        procs.stop(proxy)  # before the broker goes: nothing left to flush
    assert port_open(config.mqtt_port)
    acked = {d.id: d.acked_seqs for d in devices}
    assert sum(len(s) for s in acked.values()) == sim.stats.acked > DEVICES * 13

    def all_arrived() -> bool:
        return all(set(seqs) <= set(dashboard.counts(dev)) for dev, seqs in acked.items())

    wait_until(all_arrived, 20, what="every acknowledged reading on Pico/<id>/json")
    twice = {}
    for dev, seqs in acked.items():
        assert len(set(seqs)) == len(seqs)
        counts = dashboard.counts(dev)
        twice.update({(dev, s): n for s, n in counts.items() if n > 1})
        # Everything acknowledged after the kill (sent while the publisher was down, through the broker
        # restart, and resent by the devices) arrives exactly once: v2 redeliveries are dropped by seq.
        assert not {s: n for s, n in counts.items() if n > 1 and s not in before_kill[dev]}, dev
    dashboard.close()
    if sig == signal.SIGTERM:
        assert not twice, f"published more than once: {twice}"
    else:
        # Readings the publisher was handling when it was killed may come twice (at least once, never
        # lost: it forgets what it published but had not yet confirmed to the broker); never more.
        assert all(n == 2 for n in twice.values()) and len(twice) <= 3 * DEVICES, twice
    assert sim.stats.resent > 0
