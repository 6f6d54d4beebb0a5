"""Limits on a real proxy: failed-identification throttling and the connection cap."""
from __future__ import annotations

from tests.proxy.support import Streamer, closed_by_peer, connect, credentials, reading
from tests.support.proc import wait_until

ATTACKER = "127.0.0.2"  # another loopback address: a second source address on this machine


def test_an_address_guessing_keys_is_refused_before_its_20th_try(stack):
    """Issue 3 "Done when" 3, with the default MEDSEC_THROTTLE_FAILURES=10 and no start slots for
    a refused address (MEDSEC_THROTTLE_GRACE=0: every connection is closed at accept)."""
    proxy = stack
    proxy.start_proxy(MEDSEC_THROTTLE_GRACE="0")
    key, iv = proxy.register("bystander")
    good = Streamer(proxy.config.proxy_port, key, iv)
    good.start()
    try:
        wait_until(lambda: proxy.ingest("bystander"), 5)
        outcomes = []
        for _ in range(20):
            sock = connect(proxy.config.proxy_port, source=ATTACKER)
            try:
                sock.sendall(reading(*credentials()))
            except OSError:
                pass  # refused at accept: the write may already meet a closed socket
            assert closed_by_peer(sock)
            sock.close()
            outcomes.append(len(proxy.rejected("unknown_key")))
        # The 11th try onwards is closed at accept: auth never sees its key.
        assert len(proxy.rejected("unknown_key")) == 10
        assert outcomes[-1] == 10
        throttled = wait_until(lambda: [e for e in proxy.events() if e["event"] == "throttled"], 5)
        assert len(throttled) == 1 and throttled[0]["src"][0] == ATTACKER
        assert "refused for 30 s" in throttled[0]["detail"]
        # The registered device from another address is unaffected, and so is a new connection of it.
        before = len(proxy.ingest("bystander"))
        wait_until(lambda: len(proxy.ingest("bystander")) > before + 2, 5)
        assert good.error is None
        again = connect(proxy.config.proxy_port)
        again.sendall(reading(key, iv, 99))
        wait_until(lambda: any(m["values"]["Temp"] == "36.990" for m in proxy.ingest("bystander")), 5)
        again.close()
        assert "event=throttled" in proxy.log()
    finally:
        good.stop()


def test_connections_beyond_the_maximum_are_refused(stack):
    stack.start_proxy(MEDSEC_MAX_CONNECTIONS="3", MEDSEC_IDLE_TIMEOUT="30")
    key, iv = stack.register("capped")
    held = [connect(stack.config.proxy_port) for _ in range(3)]
    held[0].sendall(reading(key, iv))
    wait_until(lambda: stack.ingest("capped"), 5)
    extra = connect(stack.config.proxy_port)
    assert closed_by_peer(extra)
    extra.close()
    refused = wait_until(lambda: stack.rejected("too_many_connections"), 5)
    assert len(refused) == 1 and "1 refused since last report" in refused[0]["detail"]
    for _ in range(5):  # a flood: refused each time, but reported at most once a second
        extra = connect(stack.config.proxy_port)
        assert closed_by_peer(extra)
        extra.close()
    assert len(stack.rejected("too_many_connections")) <= 2
    assert len([ln for ln in stack.log().splitlines() if "reason=too_many_connections" in ln]) <= 2
    held[0].close()  # the identified one: its close is logged, then there is room again
    wait_until(lambda: stack.close_lines("eof"), 5, what="the proxy to see the close")
    late = connect(stack.config.proxy_port)
    late.sendall(reading(key, iv, 7))
    wait_until(lambda: len(stack.ingest("capped")) == 2, 5, what="a connection once there is room")
    for sock in held[1:] + [late]:
        sock.close()
