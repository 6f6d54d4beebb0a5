"""Issue 8, "Done when" 2: HAProxy in front of two proxies, two auth instances on one PostgreSQL
key store, 50 simulated v2 devices.

- the load balancer spreads the devices over both proxies;
- killing one auth instance (then restarting it, as supervisord does) loses no acknowledged reading;
- killing one proxy moves its devices to the other after they reconnect;
- the publisher pair on Mosquitto: killing the active one hands its session to the standby;
- every acknowledged reading arrives on Pico/<id>/json, exactly once (see the publisher-kill note).
"""
from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
import uuid

import pytest

from services.keystore.credentials import make_secret
from services.keystore.models import NewDevice
from services.keystore.postgres import PostgresKeyStore
from services.keystore.sealing import Sealer
from services.sim.devices import Credentials
from services.sim.runner import SimOptions, Simulation
from services.sim.v2 import V2Device, seq_counter
from tests.support.broker import SeqDashboard
from tests.support.haproxy import HAProxy, haproxy_binary
from tests.support.proc import free_port, wait_ready, wait_until

DEVICES = 50
RATE = 4.0

pytestmark = pytest.mark.skipif(haproxy_binary() is None, reason="haproxy not installed")


def start_logged(procs, tmp_path, name: str, argv: list[str], env: dict[str, str], ready: str):
    proc = procs.start(name, argv, env=env)
    log = tmp_path / "proclogs" / f"{name}.log"
    wait_ready(proc, log, lambda text: ready in text, 20, what=f"{name}: {ready}")
    return proc


def test_two_proxies_two_auths_one_postgres_store(config, config_env, procs, broker, pg_server, tmp_path):
    url = pg_server.schema_url()
    store = PostgresKeyStore(url, Sealer.from_file(config.master_key_path))
    prefix = f"so{uuid.uuid4().hex[:6]}"
    creds = []
    for i in range(DEVICES):
        secret = make_secret("v2")
        store.add(NewDevice(f"{prefix}-{i:02d}", "v2", secret))
        creds.append(Credentials(f"{prefix}-{i:02d}", "v2", secret))
    store.close()

    base = {**config_env, "MEDSEC_KEYSTORE_URL": url, "MEDSEC_BUS_TIMEOUT": "1.5"}
    sockets = [config.run_dir / f"auth-{n}.sock" for n in (1, 2)]
    ports = [free_port(), free_port()]
    auth_argv = [sys.executable, "-m", "services.auth"]
    auth_env = [{**base, "MEDSEC_AUTH_SOCKET": str(s)} for s in sockets]
    auths = [start_logged(procs, tmp_path, f"auth{n + 1}", auth_argv, auth_env[n], "event=listening")
             for n in range(2)]
    proxies = [start_logged(procs, tmp_path, f"proxy{n + 1}", [sys.executable, "-m", "services.proxy"],
                            {**auth_env[n], "MEDSEC_PROXY_PORT": str(ports[n]), "MEDSEC_PROXY_PROTOCOL": "1"},
                            "event=bus_subscribed")
               for n in range(2)]
    publisher_argv = [sys.executable, "-m", "services.publisher"]
    active = start_logged(procs, tmp_path, "publisher1", publisher_argv, base, "bus_subscribed")
    start_logged(procs, tmp_path, "publisher2", publisher_argv, base, "event=standby")
    lb = HAProxy(procs, tmp_path, ports)
    dashboard = SeqDashboard(config)

    timings: dict[str, float] = {}
    devices = [V2Device(c, counter=seq_counter(None)) for c in creds]
    sim = Simulation(devices, SimOptions(port=lb.port, rate=RATE, min_backoff=0.05, max_backoff=0.5))
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=lambda: loop.run_until_complete(sim.run()), daemon=True)
    runner.start()
    try:
        wait_until(lambda: sim.stats.acked >= DEVICES * 2, 20, what="every device acknowledged")
        spread = {name: n for name, (_, n) in lb.sessions().items()}
        assert min(spread.values()) > 0 and sum(spread.values()) == DEVICES, spread

        # 1. Kill auth 1 and restart it at once, as supervisord does: proxy 1's readings wait for it
        #    (MEDSEC_AUTH_WAIT) or, if cut off, are sent again by the devices.
        t0 = time.monotonic()
        acked = sim.stats.acked
        procs.stop(auths[0], signal.SIGKILL)
        assert auths[0].poll() is not None
        auths[0] = start_logged(procs, tmp_path, "auth1", auth_argv, auth_env[0], "event=listening")
        wait_until(lambda: sim.stats.acked >= acked + DEVICES * 2, 20, what="acks after the auth restart")
        timings["auth_kill_to_acks_again_s"] = time.monotonic() - t0

        # 2. Kill proxy 1: its devices reconnect through HAProxy to proxy 2.
        moved = {d.id: len(d.acked_seqs) for d in devices}
        t0 = time.monotonic()
        procs.stop(proxies[0], signal.SIGKILL)
        wait_until(lambda: lb.sessions()["proxy1"][0].startswith("DOWN"), 10, what="proxy1 marked down")
        wait_until(lambda: lb.sessions()["proxy2"][1] == DEVICES, 20, what="every device on proxy 2")
        timings["proxy_kill_to_all_on_proxy2_s"] = time.monotonic() - t0
        wait_until(lambda: all(len(d.acked_seqs) >= moved[d.id] + 1 for d in devices), 20,
                   what="every device acknowledged through proxy 2")
        timings["proxy_kill_to_every_device_acked_s"] = time.monotonic() - t0

        # 3. Kill the active publisher: the standby takes the lease and the same persistent session.
        t0 = time.monotonic()
        procs.stop(active, signal.SIGKILL)
        before_kill = {d.id: set(d.acked_seqs) for d in devices}
        log2 = tmp_path / "proclogs" / "publisher2.log"
        wait_until(lambda: "bus_subscribed" in log2.read_text(), 10, what="standby publisher active")
        timings["publisher_kill_to_standby_subscribed_s"] = time.monotonic() - t0
        acked = sim.stats.acked
        wait_until(lambda: sim.stats.acked >= acked + DEVICES * 2, 20, what="acks after the takeover")
    finally:
        loop.call_soon_threadsafe(sim.stop)
        runner.join(15)
    acked = {d.id: list(d.acked_seqs) for d in devices}
    total = sum(len(s) for s in acked.values())
    assert total == sim.stats.acked >= DEVICES * 7

    def all_arrived() -> bool:
        return all(set(seqs) <= set(dashboard.counts(dev)) for dev, seqs in acked.items())

    wait_until(all_arrived, 20, what="every acknowledged reading on Pico/<id>/json")
    twice = {}
    for dev, seqs in acked.items():
        assert len(set(seqs)) == len(seqs), dev
        counts = dashboard.counts(dev)
        # Exactly once, except readings the killed publisher was handling at that instant: it had
        # published them but not yet confirmed them to the broker, which hands them to the standby
        # (at least once, never lost; the same bound as tests/e2e/test_v2_recovery.py).
        dup = {s: n for s, n in counts.items() if n > 1}
        assert all(n == 2 and s in before_kill[dev] for s, n in dup.items()), (dev, dup)
        twice.update({(dev, s): n for s, n in dup.items()})
    dashboard.close()
    assert len(twice) <= 3 * DEVICES, twice
    print("scale-out timings:", {k: round(v, 2) for k, v in timings.items()},
          f"acked={total} duplicates_at_publisher_kill={len(twice)}")
    assert sim.stats.reconnects >= DEVICES // 4
