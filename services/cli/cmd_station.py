"""`medsec station run | list | revoke`: a station of the sealed parameter workflow (services/dispatch)."""
from __future__ import annotations

import argparse
import time

from services.cli.actions import action, actions_of
from services.cli.errors import CliError
from services.common.adminclient import error_message, quote
from services.common.config import Config, valid_device_id
from services.dispatch import provisioning as prov
from services.dispatch.station import StationClient, StationError


def _station_id(value: str) -> str:
    if not valid_device_id(value) or value == "dispatch":
        raise argparse.ArgumentTypeError("a station id is 1-64 of [A-Za-z0-9_.-] (not 'dispatch')")
    return value


def prepare_station(config: Config, station: str, say=print, token: str | None = None) -> StationClient:
    """Key pair (generated once), registration (once), server key: a client ready to run.
    `token`: a key-admin token of scope manage (else the operator's, from the state dir)."""
    try:
        started = time.monotonic()
        key, generated = prov.station_key(config, station)
        if generated:
            say(f"[{station}] generated a 3072-bit RSA key pair in {time.monotonic() - started:.1f}s "
                f"({prov.station_dir(config, station)}/key.pem, 0600)")
        password, registered = prov.ensure_registered(config, station, key, token)
        if registered:
            say(f"[{station}] registered its public key; broker account station-{station} created")
        server = prov.server_key(config, token)
    except prov.SetupError as exc:
        raise CliError(str(exc)) from None
    return StationClient(config, station, key, server, password, say=say)


def _run(args: argparse.Namespace) -> int:
    config = Config.from_env()
    client = prepare_station(config, args.station)
    try:
        outcome = client.run(timeout=args.timeout)
    except StationError as exc:
        raise CliError(str(exc)) from None
    if not outcome.passed:
        print(f"[{args.station}] no value set passed ({outcome.attempts} tried)")
        return 1
    print(f"[{args.station}] passed with value set {outcome.passed_set + 1} "
          f"after {outcome.attempts} attempt(s)")
    return 0


def _list(args: argparse.Namespace) -> int:
    config = Config.from_env()
    try:
        status, doc = prov.api(config, "GET", "/stations")
    except prov.SetupError as exc:
        raise CliError(str(exc)) from None
    if status != 200:
        raise CliError(f"{error_message(doc, status)} (HTTP {status})")
    stations = doc.get("stations", [])
    if not stations:
        print("no stations registered")
    for s in stations:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["created_at"]))
        print(f"{s['id']:<20} {s['fingerprint'][:23]}…  registered {when}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    config = Config.from_env()
    try:
        status, doc = prov.api(config, "DELETE", f"/stations/{quote(args.station)}")
    except prov.SetupError as exc:
        raise CliError(str(exc)) from None
    if status != 200:
        raise CliError(f"{error_message(doc, status)} (HTTP {status})")
    print(f"revoked {args.station}: its key is refused and its broker account removed")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = actions_of(subparsers, "station", "play or manage a station of the parameter workflow")
    run = action(sub, "run", _run, "play station ID: key pair, registration, request, try value sets, done")
    run.add_argument("station", type=_station_id, metavar="ID")
    run.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds (120)")
    action(sub, "list", _list, "registered stations and key fingerprints")
    rev = action(sub, "revoke", _revoke, "revoke a station's key and broker account")
    rev.add_argument("station", type=_station_id, metavar="ID")
