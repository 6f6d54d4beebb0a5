"""The envelope nonce cache of a dispatch holder (server or station), kept on disk.

Without it a restart forgets which envelopes were opened, and a captured
envelope could be replayed while its timestamp is still inside the window.
The file is rewritten atomically (0600) after every envelope the cache
accepts and before the envelope is acted on; it holds only nonces and
timestamps of the last window, so it stays small. A file that cannot be read
back fails closed: every envelope stamped before the restart is refused.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from services.common import envelope
from services.common.logs import kv
from services.common.state import write_secret

log = logging.getLogger("medsec.dispatch.nonces")


class StoredNonceCache(envelope.NonceCache):
    def __init__(self, path: Path, window: float = envelope.DEFAULT_WINDOW,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(window)
        self.path = path
        self.clock = clock
        self._load()

    def _load(self) -> None:
        now = self.clock()
        try:
            doc = json.loads(self.path.read_bytes())
            self.restore(doc, now)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            self.refuse_before(int(now * 1000))
            log.error(kv(event="nonce_cache_unreadable", path=self.path, error=exc,
                         detail="refusing every envelope stamped before now"))

    def check_and_add(self, sender: str, nonce: bytes, ts_ms: int, now: float) -> None:
        super().check_and_add(sender, nonce, ts_ms, now)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_secret(self.path, json.dumps(self.snapshot(now), separators=(",", ":")).encode())
        except OSError as exc:  # fail closed: an envelope whose nonce is not on disk is not acted on
            raise envelope.EnvelopeError("nonce_cache_unwritable", f"{self.path}: {exc.strerror}") from None
