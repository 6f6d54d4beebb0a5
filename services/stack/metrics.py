"""Read the services' Prometheus text files (run/metrics-*.prom) for `medsec status`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.common.config import Config

DEVICES_CONNECTED = "medsec_proxy_devices_connected"
READINGS_ACCEPTED = "medsec_proxy_readings_accepted_total"
READINGS_PER_SECOND = "medsec_proxy_readings_per_second"


@dataclass(frozen=True)
class StackMetrics:
    devices_connected: int
    readings_per_second: float


def parse_prometheus(text: str) -> dict[str, float]:
    """Sum each metric over its labels: {name: value}. Comment lines are skipped."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name = head.split("{", 1)[0]
        try:
            values[name] = values.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return values


def read_all(run_dir: Path) -> dict[str, float]:
    values: dict[str, float] = {}
    for path in sorted(run_dir.glob("metrics-*.prom")):
        for name, value in parse_prometheus(path.read_text()).items():
            values[name] = values.get(name, 0.0) + value
    return values


def stack_metrics(config: Config) -> StackMetrics:
    values = read_all(config.run_dir)
    return StackMetrics(
        devices_connected=int(values.get(DEVICES_CONNECTED, 0)),
        readings_per_second=values.get(READINGS_PER_SECOND, 0.0),
    )
