"""Reconnecting in the background: a hanging connect (a name lookup while a restarted container's
DNS entry comes back) never holds a caller longer than `wait`, and never holds up later attempts."""
from __future__ import annotations

import threading
import time

import pytest

from services.keystore.models import KeyStoreError
from services.keystore.reconnect import Reconnector
from tests.support.proc import wait_until


class Conn:
    def __init__(self, name: str) -> None:
        self.name, self.closed = name, False

    def close(self) -> None:
        self.closed = True


class Server:
    """connect() as the test says: at once, an error, or a hang until released."""

    def __init__(self) -> None:
        self.mode = "up"
        self.made: list[Conn] = []
        self.release = threading.Event()
        self.calls = 0

    def connect(self) -> Conn:
        self.calls += 1
        call = self.calls
        if self.mode == "down":
            raise KeyStoreError("cannot connect to the key store at db:5432/medsec: refused")
        if self.mode == "broken":
            raise RuntimeError("a bug with a secret in it: hunter2")
        if self.mode == "hang":
            self.release.wait(10)
        conn = Conn(f"c{call}")
        self.made.append(conn)
        return conn


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Server:
    s = Server()
    yield s
    s.release.set()


def test_a_reachable_server_gives_a_connection_at_once(server):
    conn = Reconnector(server.connect, wait=5).connection()
    assert conn.name == "c1" and not conn.closed


def test_after_a_failed_attempt_the_next_waits_its_turn_after_a_success_it_does_not(server):
    clock = Clock()
    connections = Reconnector(server.connect, wait=5, every=1.0, clock=clock)
    server.mode = "down"
    with pytest.raises(KeyStoreError, match="db:5432/medsec: refused"):
        connections.connection()
    server.mode = "up"
    with pytest.raises(KeyStoreError, match="refused"):  # within `every`: the last error, no attempt
        connections.connection()
    assert server.calls == 1
    clock.now += 1.0
    assert connections.connection().name == "c2"
    assert connections.connection().name == "c3"  # the server answers: no wait for the next one


def test_an_unexpected_failure_is_worded_without_its_message(server):
    server.mode = "broken"
    with pytest.raises(KeyStoreError) as err:
        Reconnector(server.connect, wait=5).connection()
    assert "RuntimeError" in str(err.value) and "hunter2" not in str(err.value)


def test_a_hanging_connect_holds_its_caller_for_wait_and_the_others_not_at_all(server):
    clock = Clock()
    connections = Reconnector(server.connect, wait=0.1, every=1.0, clock=clock)
    server.mode = "hang"
    began = time.monotonic()
    with pytest.raises(KeyStoreError, match="not connected yet"):
        connections.connection()
    assert time.monotonic() - began < 2  # 0.1 s, generously: never the hang's 10 s
    began = time.monotonic()
    for _ in range(50):
        with pytest.raises(KeyStoreError):
            connections.connection()
    assert time.monotonic() - began < 1 and server.calls == 1


def test_a_new_attempt_gets_through_while_older_ones_still_hang(server):
    clock = Clock()
    connections = Reconnector(server.connect, wait=0.05, every=1.0, clock=clock)
    server.mode = "hang"
    for _ in range(2):  # two lookups of a name that is away hang
        with pytest.raises(KeyStoreError):
            connections.connection()
        clock.now += 1.0
    server.mode = "up"  # the server is back; the hung lookups are not
    conn = wait_until(connections.connection, 5, what="the third attempt's connection")
    assert server.calls == 3 and not conn.closed
    server.release.set()  # the hung attempts finish: one is kept for the next reconnect, one closed
    wait_until(lambda: sum(c.closed for c in server.made) == 1, 5, what="the extra connection closed")
    spare = connections.connection()
    assert spare is not conn and not spare.closed and server.calls == 3


def test_attempts_hanging_at_once_are_bounded(server):
    clock = Clock()
    connections = Reconnector(server.connect, wait=0.01, every=1.0, most=3, clock=clock)
    server.mode = "hang"
    for _ in range(10):
        with pytest.raises(KeyStoreError):
            connections.connection()
        clock.now += 1.0
    assert server.calls == 3


def test_close_closes_what_attempts_make_for_nobody(server):
    connections = Reconnector(server.connect, wait=0.01)
    server.mode = "hang"
    with pytest.raises(KeyStoreError):
        connections.connection()
    connections.close()
    server.release.set()
    wait_until(lambda: server.made and server.made[0].closed, 5, what="the late connection closed")
    with pytest.raises(KeyStoreError):
        connections.connection()
    assert server.calls == 1
