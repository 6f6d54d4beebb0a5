"""`medsec sim`: simulated devices streaming readings to the proxy."""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from services.cli.errors import CliError
from services.common.config import Config
from services.sim.protocols import DEVICES, make_device
from services.sim.registry import RegistryError, ensure_devices, store_path
from services.sim.runner import SimOptions, SimStats, Simulation
from services.sim.status import Reporter, summary


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sim", help="run simulated devices against the proxy",
        description="Run N simulated wearable devices, each with its own TCP connection to the proxy, "
                    "sending plausible vitals (ECG-like pulse waveform).",
    )
    p.add_argument("--devices", type=int, default=3, metavar="N", help="number of devices (default 3)")
    p.add_argument("--rate", type=float, default=1.0, metavar="HZ",
                   help="readings per second per device; 0 = as fast as possible (default 1)")
    p.add_argument("--protocol", choices=sorted(DEVICES), default="v1")
    p.add_argument("--variant", choices=["chained", "per_block"], default="chained",
                   help="v1 CBC variant: chained (firmware) or per_block (original simulator)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--register", action="store_true",
                   help="register missing devices through the key-admin API "
                        "(credentials kept in the state dir)")
    p.add_argument("--prefix", default="sim-", help="device id prefix (default sim-: sim-001, sim-002, ...)")
    p.add_argument("--host", default=None, help="proxy host (default MEDSEC_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="proxy port (default MEDSEC_PROXY_PORT or 9998)")
    p.add_argument("--seed", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run_sim)


def _check(args: argparse.Namespace) -> None:
    if args.devices < 1:
        raise CliError("--devices must be at least 1")
    if args.rate < 0:
        raise CliError("--rate must be 0 (as fast as possible) or more")
    if args.duration is not None and args.duration <= 0:
        raise CliError("--duration must be positive")
    if args.port is not None and not 0 < args.port < 65536:
        raise CliError("--port must be 1-65535")


def run_sim(args: argparse.Namespace) -> int:
    _check(args)
    config = Config.from_env()
    try:
        creds = ensure_devices(config, args.devices, protocol=args.protocol, prefix=args.prefix,
                               register=args.register)
        devices = [make_device(c, args.variant) for c in creds]
    except (RegistryError, ValueError) as exc:
        raise CliError(str(exc)) from None
    options = SimOptions(host=args.host or config.host, port=args.port or config.proxy_port, rate=args.rate,
                         duration=args.duration, seed=args.seed)
    if args.register:
        print(f"devices: {creds[0].id} .. {creds[-1].id} (credentials in {store_path(config)})")
    print(f"streaming to {options.host}:{options.port}, {args.protocol}"
          f"{' ' + args.variant if args.protocol == 'v1' else ''}, "
          f"{f'{args.rate:g} Hz per device' if args.rate else 'as fast as possible'}; Ctrl-C stops",
          flush=True)
    reporter = Reporter(sys.stdout, sys.stdout.isatty())
    stats = asyncio.run(_run(Simulation(devices, options), reporter))
    reporter.finish()
    print(summary(stats))
    return 0


async def _run(sim: Simulation, reporter: Reporter) -> SimStats:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, sim.stop)
    try:
        return await sim.run(progress=reporter)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
