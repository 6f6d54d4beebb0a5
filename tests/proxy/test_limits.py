"""Limits on a real proxy: failed-identification throttling and the connection cap."""
from __future__ import annotations

import socket
import time

import pytest

from tests.proxy.support import Reconnector, Streamer, closed_by_peer, connect, credentials, reading
from tests.support.proc import wait_until

ATTACKER = "127.0.0.2"  # another loopback address: a second source address on this machine
NAT = "127.0.0.4"  # a shared address: a guesser and a good device behind one NAT


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
        for _ in range(20):
            sock = connect(proxy.config.proxy_port, source=ATTACKER)
            try:
                sock.sendall(reading(*credentials()))
            except OSError:
                pass  # refused at accept: the write may already meet a closed socket
            assert closed_by_peer(sock)
            sock.close()
        # The 11th try onwards is closed at accept: auth never sees its key. (The events travel
        # over the bus: the last one may reach the monitor after the connection closed.)
        wait_until(lambda: len(proxy.rejected("unknown_key")) >= 10, 5, what="ten unknown_key events")
        throttled = wait_until(lambda: [e for e in proxy.events() if e["event"] == "throttled"], 5)
        assert len(proxy.rejected("unknown_key")) == 10
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


class Guesser(Reconnector):
    """Unknown keys from one address, one connection at a time, as fast as the proxy lets it."""

    def use(self, sock: socket.socket) -> None:
        sock.sendall(reading(*credentials()))
        closed_by_peer(sock)


@pytest.mark.parametrize("grace", [0.5, 1.0])
def test_a_good_device_behind_a_guessing_neighbour_is_served_within_two_start_slots(stack, grace):
    """Issue 14 item 5: one NAT address, a guesser and a good device. The address is refused, but its
    connections start one per MEDSEC_THROTTLE_GRACE in arrival order: the good device waits at most
    two slots (the guesser's, then its own), and the guesser gets at most one try per slot."""
    stack.start_proxy(MEDSEC_THROTTLE_FAILURES="3", MEDSEC_THROTTLE_GRACE=str(grace))
    key, iv = stack.register(f"behind-nat-{grace:g}")
    guesser = Guesser(stack.config.proxy_port, NAT)
    guesser.start()
    try:
        wait_until(lambda: [e for e in stack.events() if e["event"] == "throttled"], 10, what="the block")
        blocked_at = time.monotonic()
        tries_at_block = len(stack.rejected("unknown_key"))
        for n in range(3):  # the device reconnects a few times during the block
            asked = time.monotonic()
            sock = connect(stack.config.proxy_port, source=NAT)
            sock.sendall(reading(key, iv, n))
            wait_until(lambda k=n: len(stack.ingest(f"behind-nat-{grace:g}")) == k + 1, 2 * grace + 3,
                       what="the good device's reading")
            waited = time.monotonic() - asked
            assert waited <= 2 * grace + 1.0, f"served after {waited:.2f} s"
            sock.close()
        during = time.monotonic() - blocked_at
    finally:
        guesser.stop()
    # The guesser kept trying all along, but only one try per slot reached auth.
    guesses = len(stack.rejected("unknown_key")) - tries_at_block
    assert guesses <= during / grace + 2
    assert guesses >= 1  # it was let in on slots too: the block is a pace, not a lockout
    assert stack.ingest(f"behind-nat-{grace:g}")[0]["src"][0] == NAT
