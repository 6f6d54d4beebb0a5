"""Connecting in the background, so that a caller never waits long for the key store's connection.

Right after a PostgreSQL container is restarted, looking up its name can hang for 5-20 s:
aardvark-dns, Podman's resolver, drops queries for a few seconds and glibc then waits out its
timeouts. auth answers every device from one event loop and must not stop for that. So each
connect runs on its own thread. The caller that starts one waits for it at most `wait` s; after
that, it gets the last error and the attempt goes on. While attempts fail or hang, a new one
starts every `every` s (at most `most` at once). The first to get through is used, so the store is back
about `every` s after the server and its name are.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from services.keystore.models import KeyStoreError


class _Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)


class Reconnector(Generic[C]):
    """Fresh connections from `connect` (which raises KeyStoreError with a message fit for users)."""

    def __init__(self, connect: Callable[[], C], *, wait: float = 0.2, every: float = 1.0,
                 most: int = 32, clock: Callable[[], float] = time.monotonic) -> None:
        self._connect = connect
        self._wait = wait
        self._every = every
        self._most = most
        self._clock = clock
        self._lock = threading.Lock()
        self._ready: C | None = None  # a connection an attempt made after its caller gave up
        self._pending = 0
        self._next_start = 0.0
        self._error = "the key store is not connected yet"
        self._closed = False

    def connection(self) -> C:
        """A fresh connection, or KeyStoreError with the last attempt's error within `wait` s."""
        with self._lock:
            if (self._ready is None and not self._closed and self._pending < self._most
                    and self._clock() >= self._next_start):
                self._next_start = self._clock() + self._every
                self._pending += 1
                done = threading.Event()
                threading.Thread(target=self._attempt, args=(done,), name="keystore-connect",
                                 daemon=True).start()
            else:
                done = None
        if done is not None:
            done.wait(self._wait)
        with self._lock:
            ready, self._ready = self._ready, None
            if ready is None:
                raise KeyStoreError(self._error)
            return ready

    def _attempt(self, done: threading.Event) -> None:
        spare = None
        try:
            made = self._connect()
            with self._lock:
                self._next_start = 0.0  # the server answers: the next reconnect need not wait
                if self._ready is None and not self._closed:
                    self._ready = made
                else:  # another attempt got through first, or the store was closed
                    spare = made
        except KeyStoreError as exc:
            with self._lock:
                self._error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a thread must not die with a traceback
            with self._lock:
                self._error = f"cannot connect to the key store: {type(exc).__name__}"
        finally:
            with self._lock:
                self._pending -= 1
            done.set()
        if spare is not None:
            with contextlib.suppress(Exception):
                spare.close()

    def close(self) -> None:
        """Close a connection made for nobody yet (attempts still hanging close theirs when done)."""
        with self._lock:
            ready, self._ready, self._closed = self._ready, None, True
        if ready is not None:
            with contextlib.suppress(Exception):
                ready.close()
