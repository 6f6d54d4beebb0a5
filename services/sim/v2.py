"""The simulated protocol v2 device (docs/protocol-v2.md): sealed frames, verified acks, resends.

Like the firmware, it keeps every reading until the gateway acknowledges it
(at most MAX_UNACKED, the gateway's replay window; the oldest is dropped and
counted beyond that) and sends the unacknowledged frames again, unchanged and
oldest first, after a reconnect. Its sequence numbers only grow, also across
runs of the simulator: a write-ahead ceiling per device in the state dir
(OSCORE appendix B.1.1, the same rule as firmware/lib/v2codec.py).
"""
from __future__ import annotations

import os
import time
from collections import OrderedDict
from pathlib import Path

from services.common import v1, v2
from services.common.config import Config
from services.sim.devices import Credentials, SimDevice

MAX_UNACKED = v2.ReplayWindow.WINDOW
COUNTER_STEP = 1000
# When a device has no counter file yet, start above anything a lost file could have held:
# milliseconds since 2025 stay below 2**40 until 2059.
_EPOCH_2025 = 1735689600


class SeqCounter:
    """Sequence numbers that only grow, also across restarts: write-ahead ceiling in a file."""

    def __init__(self, path: Path | None, step: int = COUNTER_STEP) -> None:
        self.path = path
        self.step = step
        self.ceiling = self._load()
        floor = int((time.time() - _EPOCH_2025) * 1000) if path is not None else 1
        self.next_seq = max(self.ceiling, floor, 1)

    def _load(self) -> int:
        if self.path is None:
            return 0
        try:
            return int(self.path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def take(self) -> int:
        seq = self.next_seq
        if seq >= self.ceiling:
            self.ceiling = seq + self.step
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                tmp = self.path.with_name(self.path.name + ".tmp")
                tmp.write_text(str(self.ceiling))
                os.replace(tmp, self.path)
        self.next_seq = seq + 1
        return seq


def counter_path(device_id: str) -> Path:
    return Config.from_env().home / "sim-v2-seq" / f"{device_id}.seq"


class V2Device(SimDevice):
    protocol = "v2"
    acknowledged = True

    def __init__(self, creds: Credentials, variant: str = "chained",
                 counter: SeqCounter | None = None) -> None:
        super().__init__(creds, variant)
        try:
            master = bytes.fromhex(creds.secrets["master_key"])
            kid = bytes.fromhex(creds.secrets["key_id"])
            self.keys = v2.derive_keys(master, kid)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"device {creds.id}: v2 credentials need master_key and key_id (hex)") from exc
        self.counter = counter or SeqCounter(counter_path(creds.id))
        self.pending: OrderedDict[int, bytes] = OrderedDict()
        self.dropped = 0  # readings given up because MAX_UNACKED were waiting
        self.acked_seqs: list[int] = []  # every seq the gateway acknowledged (tests check these)
        self._buf = bytearray()

    def encode(self, values: dict[str, float]) -> bytes:
        return self.seal(v1.format_reading(values))

    def seal(self, plaintext: bytes) -> bytes:
        seq = self.counter.take()
        frame = v2.seal_data(self.keys, seq, plaintext)
        self.pending[seq] = frame
        if len(self.pending) > MAX_UNACKED:
            self.pending.popitem(last=False)
            self.dropped += 1
        return frame

    def on_data(self, data: bytes) -> int:
        """Verify acks; returns how many pending readings they acknowledged. Raises V2Error if forged."""
        self._buf += data
        count = 0
        while True:
            frame, used = v2.read(self._buf, expect="ack")
            if frame is None:
                return count
            del self._buf[:used]
            seq = v2.open_ack(self.keys, frame)
            if self.pending.pop(seq, None) is not None:
                self.acked_seqs.append(seq)
                count += 1

    def unacked(self) -> list[bytes]:
        """After a reconnect: the frames still waiting for an ack, as sent, oldest first."""
        self._buf.clear()  # a partial ack of the old connection never completes
        return list(self.pending.values())
