"""The simulated protocol v2 device (docs/protocol-v2.md): the firmware's own v2 code on CPython.

Frames, answers and the counter are services/common/v2device.py, the file the
Pico runs. Like the firmware, the device keeps every reading until the gateway
answers for its seq: an ack (on the bus) or a verified refusal (refused for good:
dropped). Nothing else drops a reading except a full queue (MAX_UNACKED, the
gateway's replay window; the oldest is dropped and counted). After a reconnect
the unanswered frames are sent again, unchanged and oldest first; the runner
backs off on connections that end without a verified answer, and ends one that
stays open without answering for SimOptions.ack_timeout while readings wait
(`stalled`, as the firmware's ack_timeout_ms).
"""
from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

from services.common import v1, v2, v2device
from services.common.config import Config
from services.sim.devices import Credentials, SimDevice

MAX_UNACKED = v2.ReplayWindow.WINDOW
COUNTER_STEP = 1000
# When a device has no counter file yet, start above anything a lost file could have held:
# milliseconds since 2025 stay below 2**40 until 2059.
_EPOCH_2025 = 1735689600

Counter = v2device.FileCounter | v2device.MemoryCounter


def seq_counter(path: Path | None, step: int = COUNTER_STEP) -> Counter:
    """The device's counter (v2device.FileCounter) in `path`, or in memory for None (tests, benchmarks).

    A fresh file starts at the milliseconds since 2025, not 1: a simulator whose state dir
    was deleted must not reuse the seqs of its earlier runs."""
    if path is None:
        return v2device.MemoryCounter()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return v2device.FileCounter(str(path), step, start=int((time.time() - _EPOCH_2025) * 1000))


def counter_path(device_id: str) -> Path:
    return Config.from_env().home / "sim-v2-seq" / f"{device_id}.seq"


class V2Device(SimDevice):
    protocol = "v2"
    acknowledged = True

    def __init__(self, creds: Credentials, variant: str = "chained", counter: Counter | None = None) -> None:
        super().__init__(creds, variant)
        try:
            master = bytes.fromhex(creds.secrets["master_key"])
            kid = bytes.fromhex(creds.secrets["key_id"])
            self.session = v2device.Session(master, kid, counter or seq_counter(counter_path(creds.id)))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"device {creds.id}: v2 credentials need master_key and key_id (hex)") from exc
        self.counter = self.session.counter
        self.pending: OrderedDict[int, bytes] = OrderedDict()
        self.dropped = 0  # readings given up because MAX_UNACKED were waiting
        self.refused: list[tuple[int, str]] = []  # (seq, reason) of every verified refusal that dropped one
        self.acked_seqs: list[int] = []  # every seq the gateway acknowledged (tests check these)
        self.answered = False  # a verified answer came on the current connection
        self.progress = time.monotonic()  # last sign of life: connected, answered, or a first reading waits
        self._buf = bytearray()

    def encode(self, values: dict[str, float]) -> bytes:
        return self.seal(v1.format_reading(values))

    def seal(self, plaintext: bytes) -> bytes:
        seq, frame = self.session.seal(plaintext)
        if not self.pending:
            self.progress = time.monotonic()  # nothing was waiting: the wait for an answer starts now
        self.pending[seq] = frame
        if len(self.pending) > MAX_UNACKED:
            self.pending.popitem(last=False)
            self.dropped += 1
        return frame

    def on_data(self, data: bytes) -> int:
        """Verify answers; returns how many pending readings acks cleared. Raises V2Error (a ValueError)
        for anything that is not a verified answer of this device: the runner then reconnects."""
        self._buf += data
        count = 0
        while True:
            kind, seq, code, used = self.session.read_answer(self._buf)
            if kind is None:
                return count
            del self._buf[:used]
            self.answered = True
            self.progress = time.monotonic()
            if self.pending.pop(seq, None) is None:
                continue  # answered before (a re-sent answer) or never sent: nothing to drop
            if kind == v2device.ACK:
                self.acked_seqs.append(seq)
                count += 1
            else:
                self.refused.append((seq, v2device.reason_name(code)))

    def unacked(self) -> list[bytes]:
        """After a reconnect: the frames still waiting for an answer, as sent, oldest first."""
        self._buf.clear()  # a partial answer of the old connection never completes
        self.answered = False
        self.progress = time.monotonic()
        return list(self.pending.values())

    def stalled(self, now: float, timeout: float) -> bool:
        return bool(self.pending) and now - self.progress > timeout
