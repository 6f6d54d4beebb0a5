"""The device simulator, as a library (tests, benchmarks) and behind `medsec sim`.

    from services.sim import run_devices
    stats = run_devices(config, count=3, rate=10, duration=2)   # registers sim-001..003 if needed
    stats.sent, stats.errors

Lower level: `ensure_devices` (credentials), `make_device` (one protocol's
device), `Simulation` / `run` (the asyncio engine), `Vitals` (the readings).
"""
from __future__ import annotations

from services.common.config import Config
from services.sim.devices import Credentials, SimDevice, V1Device
from services.sim.protocols import UnknownProtocol, make_device
from services.sim.registry import RegistryError, ensure_devices
from services.sim.runner import OnSend, SimOptions, SimStats, Simulation, run, simulate
from services.sim.vitals import Vitals

__all__ = [
    "Credentials", "OnSend", "RegistryError", "SimDevice", "SimOptions", "SimStats", "Simulation",
    "UnknownProtocol", "V1Device", "Vitals", "ensure_devices", "make_device", "run", "run_devices",
    "simulate",
]


def run_devices(config: Config, count: int, rate: float = 1.0, duration: float = 5.0, protocol: str = "v1",
                variant: str = "chained", prefix: str = "sim-", register: bool = True,
                on_send: OnSend | None = None, seed: int | None = None) -> SimStats:
    """Register (or reuse) `count` devices and stream readings to config's proxy for `duration` seconds."""
    creds = ensure_devices(config, count, protocol=protocol, prefix=prefix, register=register)
    devices = [make_device(c, variant) for c in creds]
    options = SimOptions(host=config.host, port=config.proxy_port, rate=rate, duration=duration, seed=seed)
    return run(devices, options, on_send)
