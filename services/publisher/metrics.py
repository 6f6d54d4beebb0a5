"""Prometheus text exposition of the publisher's counters, written to a file in the run directory.

A file (refreshed every few seconds, replaced atomically) keeps the publisher
free of an HTTP server; node_exporter's textfile collector or `medsec status`
read it.
"""
from __future__ import annotations

import os
from pathlib import Path


def render(snapshot: dict[str, object], connected: bool) -> str:
    lines = [
        "# HELP medsec_publisher_accepted_total Readings published on the public tree.",
        "# TYPE medsec_publisher_accepted_total counter",
        f"medsec_publisher_accepted_total {snapshot['accepted']}",
        "# HELP medsec_publisher_duplicates_total Readings dropped as duplicates.",
        "# TYPE medsec_publisher_duplicates_total counter",
        f"medsec_publisher_duplicates_total {snapshot['duplicates']}",
        "# HELP medsec_publisher_rejected_total Bus messages rejected, by reason.",
        "# TYPE medsec_publisher_rejected_total counter",
    ]
    rejected = snapshot["rejected"]
    for reason in sorted(rejected) if isinstance(rejected, dict) else ():
        lines.append(f'medsec_publisher_rejected_total{{reason="{reason}"}} {rejected[reason]}')
    lines += [
        "# HELP medsec_publisher_status_updates_total Retained online/offline updates published.",
        "# TYPE medsec_publisher_status_updates_total counter",
        f"medsec_publisher_status_updates_total {snapshot['status_updates']}",
        "# HELP medsec_publisher_alerts_total Alerts published on Pico/<id>/alert (duplicate sessions).",
        "# TYPE medsec_publisher_alerts_total counter",
        f"medsec_publisher_alerts_total {snapshot.get('alerts', 0)}",
        "# HELP medsec_publisher_messages_total MQTT messages handed to the broker.",
        "# TYPE medsec_publisher_messages_total counter",
        f"medsec_publisher_messages_total {snapshot['published']}",
        "# HELP medsec_publisher_bus_connected 1 while connected to the broker.",
        "# TYPE medsec_publisher_bus_connected gauge",
        f"medsec_publisher_bus_connected {int(connected)}",
    ]
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
