"""Helpers for history tests: readings as the publisher publishes them, the history process."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from services.common.v1 import FIELDS
from services.history.readings import Row
from tests.support.proc import Processes, wait_ready

VALUES = (36.6, 31.2, 1.65, 0.01, -0.02, 0.98, 30.5)


def payload(device: str, ts: float, seq: int | None, values: tuple[float, ...] = VALUES) -> bytes:
    """Pico/<id>/json exactly as services/publisher/topics.py writes it."""
    protocol = "v2" if seq is not None else "v1"
    doc: dict[str, object] = {"device": device, "ts": ts, "seq": seq, "protocol": protocol}
    doc.update(zip(FIELDS, values, strict=True))
    return json.dumps(doc, separators=(",", ":")).encode()


def start_history(procs: Processes, env: dict[str, str], log_dir: Path, name: str = "history"):
    """The real `python -m services.history`, once it holds its subscription."""
    log = log_dir / f"{name}.log"
    before = log.read_text().count("event=bus_subscribed") if log.exists() else 0
    proc = procs.start(name, [sys.executable, "-m", "services.history"], env=env)
    wait_ready(proc, log, lambda text: text.count("event=bus_subscribed") > before, 20,
               what="history to subscribe")
    return proc


READ = "value-of-a-read-token"
START = 1_800_000_000.0  # a minute boundary


def rows_for(device: str, n: int, step: float = 0.5) -> list[Row]:
    """n readings of a device from START, every `step` s, v1 and v2 mixed, values varying."""
    out = []
    for i in range(n):
        values = (36.0 + (i % 17) / 10, 30.0 + i % 5, (i % 33) / 10, -1 + (i % 21) / 10, 0.5,
                  0.98 - i % 3 / 100, 31.0 + i % 7)
        out.append(Row(device, START + i * step, i if i % 3 else None, "v2" if i % 3 else "v1", values))
    return out


def get(client, path: str, **params):
    return client.get(f"/api/v1{path}", query_string=params, headers={"Authorization": f"Bearer {READ}"})


