"""`medsec up | down | status | logs | admin-token | password` (alias `mqtt-password`)."""
from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

from services.broker import BrokerError
from services.cli.errors import CliError
from services.common.config import Config
from services.common.state import StateError, admin_token, generated_password, init_state, set_admin_token
from services.stack import control
from services.stack.metrics import stack_metrics


def register(sub: argparse._SubParsersAction) -> None:
    up = sub.add_parser("up", help="start the stack under supervisord")
    up.add_argument("--detach", action="store_true", help="start in the background and return")
    up.add_argument("--demo", type=int, default=0, metavar="N", help="also run N simulated devices")
    up.add_argument("--no-nodered", action="store_true", help="do not start Node-RED")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop the stack")
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="services, pids, devices connected, readings/s")
    status.set_defaults(func=cmd_status)

    logs = sub.add_parser("logs", help="show a service's log (all services when none is named)")
    logs.add_argument("service", nargs="?")
    logs.add_argument("-n", "--lines", type=int, default=40)
    logs.add_argument("-f", "--follow", action="store_true")
    logs.set_defaults(func=cmd_logs)

    token = sub.add_parser("admin-token", help="print the key-admin API token")
    token.add_argument("--rotate", action="store_true", help="issue a new token; the old one stops working")
    token.set_defaults(func=cmd_admin_token)

    pw = sub.add_parser("password", aliases=["mqtt-password"], help="print a generated password: a broker "
                        "account's (e.g. dashboard) or a Node-RED login's (nodered-viewer, nodered-operator, "
                        "nodered-admin)")
    pw.add_argument("account")
    pw.set_defaults(func=cmd_password)



def _banner(config: Config, nodered: bool) -> str:
    lines = [
        "medsec is running",
        f"  devices (v1/v2, TCP)  {config.host}:{config.proxy_port}",
        f"  MQTT broker           mqtt://{config.host}:{config.mqtt_port}"
        "   (read-only account: dashboard, password: `medsec password dashboard`)",
        f"  key-admin API         {config.admin_url}",
        f"  admin token           {admin_token(config)}",
    ]
    if nodered:
        lines.append(f"  Node-RED dashboard    http://{config.host}:{config.nodered_port}/dashboard")
        lines.append("     logins: viewer (vitals, status, alerts), operator (also the Devices page), admin;"
                     " password: `medsec password nodered-<login>`")
        lines.append(f"  Node-RED editor       http://{config.host}:{config.nodered_port}/"
                     "   (login admin only)")
    lines.append(f"  state directory       {config.home}")
    return "\n".join(lines)


def cmd_up(args: argparse.Namespace) -> int:
    config = Config.from_env()
    if control.is_running(config):
        raise CliError(f"a stack is already running for {config.home}; `medsec down` stops it")
    try:
        conf = control.prepare(config, args.demo, not args.no_nodered, daemon=args.detach)
    except (StateError, BrokerError) as exc:
        raise CliError(str(exc)) from None
    nodered = "[program:nodered]" in conf.read_text()
    try:
        proc = control.start_supervisord(conf, daemon=args.detach)
        control.wait_ready(config, timeout=60 if nodered else 30, nodered=nodered)
        if args.demo:
            control.start_program(config, "demo")
    except (control.StackError, OSError) as exc:
        control.stop(config)
        raise CliError(f"{exc}") from None
    print(_banner(config, nodered), flush=True)
    if args.detach:
        return 0
    print("Ctrl-C stops everything.", flush=True)
    return _wait_foreground(config, proc)


def _wait_foreground(config: Config, proc: subprocess.Popen) -> int:
    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        while proc.poll() is None:
            time.sleep(0.5)
        return proc.returncode or 0
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        try:
            control.stop(config)
            proc.wait(30)
        except (control.StackError, subprocess.TimeoutExpired) as exc:
            raise CliError(f"could not stop cleanly: {exc}") from None
        print("stopped.")
        return 0


def cmd_down(args: argparse.Namespace) -> int:
    config = Config.from_env()
    if control.stop(config):
        print(f"stopped the stack in {config.home}")
    else:
        print(f"no stack running for {config.home}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    config = Config.from_env()
    if not control.is_running(config):
        print(f"no stack running for {config.home}")
        return 3
    metrics = stack_metrics(config)
    print(f"{'SERVICE':<11} {'PID':>7}  {'STATE':<9} {'UPTIME':>8}")
    for p in control.processes(config):
        uptime = f"{p.uptime:.0f}s" if p.pid else "-"
        print(f"{p.name:<11} {p.pid or '-':>7}  {p.state:<9} {uptime:>8}")
    print(f"\ndevices connected: {metrics.devices_connected}")
    print(f"readings/s:        {metrics.readings_per_second:.1f}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    config = Config.from_env()
    files = sorted(config.logs_dir.glob("*.log")) if config.logs_dir.exists() else []
    if args.service:
        files = [f for f in files if f.stem == args.service]
        if not files:
            raise CliError(f"no log for {args.service!r} in {config.logs_dir}")
    if not files:
        raise CliError(f"no logs in {config.logs_dir}")
    argv = ["tail", "-n", str(args.lines)] + (["-F"] if args.follow else []) + [str(f) for f in files]
    try:
        return subprocess.call(argv)
    except KeyboardInterrupt:
        return 0


def cmd_admin_token(args: argparse.Namespace) -> int:
    config = Config.from_env()
    try:
        if args.rotate:
            init_state(config)
            print(set_admin_token(config))
        else:
            print(admin_token(config))
    except StateError as exc:
        raise CliError(str(exc)) from None
    return 0


def cmd_password(args: argparse.Namespace) -> int:
    config = Config.from_env()
    try:
        print(generated_password(config, args.account))
    except StateError as exc:
        raise CliError(str(exc)) from None
    return 0


if __name__ == "__main__":
    sys.exit(1)
