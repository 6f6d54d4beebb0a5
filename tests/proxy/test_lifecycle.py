"""The proxy process's lifecycle: SIGTERM, auth restarts, live revocation on two instances, metrics."""
from __future__ import annotations

import signal
import sys
import time

from services.stack.metrics import parse_prometheus
from tests.proxy.support import closed_by_peer, connect, reading
from tests.support.broker import Subscriber, start_mosquitto
from tests.support.proc import free_port, wait_until


def test_sigterm_closes_connections_with_disconnect_events_and_exits_0(proxy):
    key, iv = proxy.register("term")
    sock = connect(proxy.config.proxy_port)
    sock.sendall(reading(key, iv))
    wait_until(lambda: proxy.ingest("term"), 5)
    proc = proxy.proxies[0]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert closed_by_peer(sock, timeout=1)
    sock.close()
    events = wait_until(lambda: [e for e in proxy.events("term") if e["event"] == "disconnect"], 5)
    assert events[0]["reason"] == "shutdown"
    assert "event=stopped flushed=True readings=1" in proxy.log()
    assert not (proxy.config.run_dir / "metrics-proxy.prom").exists()


def _auth(stack):
    [auth] = [p for p in stack.procs.started if p.args[-1] == "services.auth" and p.poll() is None]
    return auth


def test_a_reading_that_arrives_while_auth_restarts_waits_for_it(proxy):
    key, iv = proxy.register("patient-wait")
    sock = connect(proxy.config.proxy_port)
    sock.sendall(reading(key, iv, 1))
    wait_until(lambda: proxy.ingest("patient-wait"), 5)
    proxy.procs.stop(_auth(proxy))
    sock.sendall(reading(key, iv, 2))  # auth is down: the proxy keeps trying (MEDSEC_AUTH_WAIT=5)
    proxy.procs.start("auth", [sys.executable, "-m", "services.auth"], env=proxy.env)
    msgs = wait_until(lambda: len(proxy.ingest("patient-wait")) == 2 and proxy.ingest("patient-wait"), 8,
                      what="the reading once auth is back")
    assert msgs[1]["values"]["Temp"] == "36.020"
    sock.sendall(reading(key, iv, 3))
    wait_until(lambda: len(proxy.ingest("patient-wait")) == 3, 5)
    assert not proxy.close_lines("auth_unavailable")
    sock.close()


def test_auth_down_for_longer_closes_with_auth_unavailable_and_publishes_nothing(stack):
    stack.start_proxy(MEDSEC_AUTH_WAIT="0.3")
    key, iv = stack.register("survivor")
    sock = connect(stack.config.proxy_port)
    sock.sendall(reading(key, iv, 1))
    wait_until(lambda: stack.ingest("survivor"), 5)
    stack.procs.stop(_auth(stack))
    sock.sendall(reading(key, iv, 2))
    assert closed_by_peer(sock)
    sock.close()
    wait_until(lambda: stack.rejected("auth_unavailable", "survivor"), 5)
    assert len(stack.ingest("survivor")) == 1  # nothing published without auth
    assert len(stack.close_lines("auth_unavailable")) == 1
    # Back by itself once auth is.
    stack.procs.start("auth", [sys.executable, "-m", "services.auth"], env=stack.env)
    wait_until(lambda: stack.config.auth_socket.exists(), 10, what="auth to come back")
    again = connect(stack.config.proxy_port)
    again.sendall(reading(key, iv, 3))
    wait_until(lambda: len(stack.ingest("survivor")) == 2, 5, what="readings after auth restarted")
    again.close()
    assert "Traceback" not in stack.log()


def test_revocation_closes_the_device_on_every_proxy_within_a_second(stack):
    """Issue 3 "Done when" 2: two proxy instances, one connection of the device on each."""
    ports = [stack.config.proxy_port, free_port()]
    stack.start_proxy("proxy")
    stack.start_proxy("proxy2", port=ports[1])
    key, iv = stack.register("lost-device")
    other_key, other_iv = stack.register("kept-device")
    socks = [connect(p) for p in ports]
    for n, sock in enumerate(socks):
        sock.sendall(reading(key, iv, n))
    kept = connect(ports[0])
    kept.sendall(reading(other_key, other_iv))
    wait_until(lambda: len(stack.ingest("lost-device")) == 2 and stack.ingest("kept-device"), 5)
    started = stack.revoke("lost-device")
    for sock in socks:
        assert closed_by_peer(sock, timeout=max(0.05, started + 1.0 - time.monotonic()))
        sock.close()
    assert time.monotonic() - started < 1.0
    for name in ("proxy", "proxy2"):
        wait_until(lambda n=name: stack.close_lines("revoked", n), 2)
    wait_until(lambda: len(stack.rejected("revoked", "lost-device")) == 2, 5)
    # A reconnect with the revoked key is refused; the other device streams on.
    retry = connect(ports[1])
    retry.sendall(reading(key, iv, 9))
    assert closed_by_peer(retry)
    retry.close()
    wait_until(lambda: len(stack.rejected("revoked", "lost-device")) == 3, 5)
    assert len(stack.ingest("lost-device")) == 2
    kept.sendall(reading(other_key, other_iv, 1))
    wait_until(lambda: len(stack.ingest("kept-device")) == 2, 5)
    kept.close()


def test_metrics_file_counts_connections_and_readings(stack):
    proxy = stack
    proxy.start_proxy(MEDSEC_IDLE_TIMEOUT="30")  # the file is rewritten every 2 s
    key, iv = proxy.register("counted")
    sock = connect(proxy.config.proxy_port)
    sock.sendall(reading(key, iv, 1) + reading(key, iv, 2))
    wait_until(lambda: len(proxy.ingest("counted")) == 2, 5)
    path = proxy.config.run_dir / "metrics-proxy.prom"

    def values():
        return parse_prometheus(path.read_text())

    got = wait_until(lambda: values()["medsec_proxy_readings_accepted_total"] == 2 and values(), 5)
    assert got["medsec_proxy_devices_connected"] == 1
    assert got["medsec_proxy_identify_seconds_count"] == 1
    assert got["medsec_proxy_publish_seconds_count"] == 2
    sock.close()


def _streaming_when_the_broker_stops(stack):
    """A device whose first reading went through, on a proxy with a 0.5 s bus timeout; then the
    broker stops. Its key, IV and socket."""
    stack.start_proxy(MEDSEC_BUS_TIMEOUT="0.5", MEDSEC_IDLE_TIMEOUT="30")
    key, iv = stack.register("patient")
    sock = connect(stack.config.proxy_port)
    sock.sendall(reading(key, iv, 1))
    wait_until(lambda: stack.ingest("patient"), 5)
    [mosquitto] = [p for p in stack.procs.started if "mosquitto" in p.args[0]]
    stack.procs.stop(mosquitto)
    return key, iv, sock


def test_a_device_streaming_into_a_silent_broker_is_closed_at_the_bus_timeout(stack):
    """More readings than may wait for their PUBACK (the connection stops reading and waits for the
    oldest): the broker's silence still closes it, at the timeout, with nothing left hanging."""
    key, iv, sock = _streaming_when_the_broker_stops(stack)
    started = time.monotonic()
    sock.sendall(b"".join(reading(key, iv, n) for n in range(2, 20)))
    assert closed_by_peer(sock, timeout=3)
    assert time.monotonic() - started < 2.5
    sock.close()
    [line] = wait_until(lambda: stack.close_lines("bus_unavailable"), 3)
    assert "no PUBACK within 0.5 s" in line
    assert "Traceback" not in stack.log()


def test_broker_down_closes_with_bus_unavailable_then_recovers(stack):
    key, iv, sock = _streaming_when_the_broker_stops(stack)
    sock.sendall(reading(key, iv, 2))
    assert closed_by_peer(sock, timeout=3)  # not held open, not queued without end
    sock.close()
    wait_until(lambda: stack.close_lines("bus_unavailable"), 3)
    # The broker comes back (same config, persistence on): the proxy reconnects by itself.
    stack.monitor.close()
    start_mosquitto(stack.config, stack.procs)
    wait_until(lambda: stack.log().count("event=bus_subscribed") == 2, 10, what="the proxy to reconnect")
    stack.monitor = Subscriber(stack.config, "monitor")
    stack.monitor.subscribe("medsec/#")
    again = connect(stack.config.proxy_port)
    again.sendall(reading(key, iv, 3))
    msgs = wait_until(lambda: [m for m in stack.ingest("patient") if m["values"]["Temp"] == "36.030"], 5)
    assert len(msgs) == 1
    again.close()
    assert "Traceback" not in stack.log()
