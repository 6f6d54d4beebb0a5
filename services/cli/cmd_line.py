"""`medsec line run --stations N`: set up a demo line and drive it, printing each step."""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid

from services.cli.actions import action, actions_of
from services.cli.cmd_station import prepare_station
from services.cli.errors import CliError
from services.common.config import Config
from services.dispatch.service import DispatchConfig
from services.dispatch.station import Outcome, StationError

TARGET = {"field": "result", "min": 95.0, "max": 105.0}


def demo_file(station: str, fail_first: bool) -> dict:
    """The demo machine reaches setpoint x gain; the rule wants 95..105, so gain 1.3 fails."""
    sets = [{"setpoint": 100, "gain": 1.0, "speed": 1200}]
    if fail_first:
        sets.insert(0, {"setpoint": 100, "gain": 1.3, "speed": 1500})
    return {"station": station, "value_sets": sets, "accept": TARGET, "recipe": f"demo recipe for {station}"}


def _run(args: argparse.Namespace) -> int:
    config = Config.from_env()
    cfg = DispatchConfig.from_config(config)
    if cfg.line_env:
        raise CliError("MEDSEC_DISPATCH_LINE is set; unset it so the line comes from line.json")
    stations = [f"{args.prefix}{i}" for i in range(1, args.stations + 1)]
    run_id = f"line-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    cfg.params_dir.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(stations, 1):
        (cfg.params_dir / f"{s}.json").write_text(json.dumps(demo_file(s, i in args.fail_first), indent=1))
    (cfg.params_dir / "line.json").write_text(json.dumps({"run": run_id, "stations": stations}, indent=1))
    print(f"line {run_id}: {' -> '.join(stations)} (parameter files in {cfg.params_dir})")

    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)

    token = _token_from_stdin() if args.token_stdin else None
    clients = [prepare_station(config, s, say, token) for s in stations]
    outcomes: dict[str, Outcome | Exception] = {}
    started = time.monotonic()

    def play(client) -> None:
        try:
            outcomes[client.station] = client.run(timeout=args.timeout)
        except StationError as exc:
            outcomes[client.station] = exc

    threads = [threading.Thread(target=play, args=(c,), name=f"station-{c.station}") for c in clients]
    for t in threads:  # all at once: each must still wait for its predecessor's done
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    print(f"\nline {run_id} after {elapsed:.1f}s:")
    ok = True
    for s in stations:
        o = outcomes.get(s)
        if isinstance(o, Outcome) and o.passed:
            print(f"  {s}: passed with value set {o.passed_set + 1} after {o.attempts} attempt(s)")
        else:
            ok = False
            print(f"  {s}: {'failed: ' + str(o) if isinstance(o, Exception) else 'no value set passed'}")
    print("line complete" if ok else "line NOT complete")
    return 0 if ok else 1


def _token_from_stdin() -> str:
    """A manage token given on stdin, where no state dir holds one (e.g. inside the dispatch
    container, which holds only its stations:read token): never on a command line."""
    token = sys.stdin.readline().strip()
    if not token:
        raise CliError("--token-stdin: no token on standard input")
    return token


def _positions(value: str) -> set[int]:
    try:
        return {int(v) for v in value.split(",") if v.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError("comma-separated station positions, e.g. 2 or 2,3") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = actions_of(subparsers, "line", "run a demo line of the sealed parameter workflow")
    run = action(sub, "run", _run, "write N stations' files and line order, register them, drive the line")
    run.add_argument("--stations", type=int, default=3, help="number of stations (3)")
    run.add_argument("--fail-first", type=_positions, default={2}, metavar="POS",
                     help="positions whose first value set fails (default 2)")
    run.add_argument("--prefix", default="s", help="station id prefix (s: s1, s2, ...)")
    run.add_argument("--timeout", type=float, default=120.0, help="seconds per station (120)")
    run.add_argument("--token-stdin", action="store_true",
                     help="read a key-admin token of scope manage from standard input (compose: the "
                          "dispatch container holds none)")
