"""Prometheus text of the history service's counters, a file in the run directory (as the publisher's)."""
from __future__ import annotations

import os
from pathlib import Path

_HELP = {
    "stored": "Readings stored (new rows).",
    "copies": "Readings delivered again and already stored (ignored).",
    "batches": "Batches committed.",
    "store_errors": "Batches the store refused (kept and retried; nothing acknowledged).",
    "pruned_raw": "Raw readings deleted by retention.",
    "pruned_minutes": "Per-minute aggregates deleted by retention.",
}


def render(snapshot: dict[str, object], connected: bool) -> str:
    lines = []
    for name, text in _HELP.items():
        lines += [f"# HELP medsec_history_{name}_total {text}", f"# TYPE medsec_history_{name}_total counter",
                  f"medsec_history_{name}_total {snapshot[name]}"]
    lines += ["# HELP medsec_history_rejected_total Messages that are not readings, by reason.",
              "# TYPE medsec_history_rejected_total counter"]
    rejected = snapshot["rejected"]
    for reason in sorted(rejected) if isinstance(rejected, dict) else ():
        lines.append(f'medsec_history_rejected_total{{reason="{reason}"}} {rejected[reason]}')
    lines += ["# HELP medsec_history_bus_connected 1 while connected to the broker.",
              "# TYPE medsec_history_bus_connected gauge", f"medsec_history_bus_connected {int(connected)}"]
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
