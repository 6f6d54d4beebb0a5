"""`medsec device add | list | show | rotate | revoke | import | provision`: the key-admin API."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from services.cli import provision
from services.cli.actions import action, actions_of
from services.cli.errors import CliError
from services.common.adminclient import AdminApiError, AdminClient, quote
from services.common.config import Config


def api_call(method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             content_type: str = "application/json", config: Config | None = None) -> Any:
    """One authenticated request to the key-admin API; CliError with the API's message on failure."""
    try:
        client = AdminClient.from_config(config or Config.from_env())
        return client.call(method, path, body, raw=raw, content_type=content_type)
    except AdminApiError as exc:
        if exc.unreachable:
            raise CliError(exc.message) from None
        lines = (exc.body.get("lines") if isinstance(exc.body, dict) else None) or []
        details = "".join(f"\n  line {e.get('line')}: {e.get('error')}" for e in lines)
        raise CliError(f"{exc}{details}") from None


def _when(ts: float | None) -> str:
    if not ts:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def _device_text(d: dict[str, Any]) -> str:
    lines = [
        f"device       {d['id']}",
        f"protocol     {d['protocol']}",
        f"state        {d['state']}",
        f"registered   {_when(d.get('created_at'))}",
        f"last seen    {_when(d.get('last_seen'))}",
        f"readings     {d.get('readings', 0)}  (rejected {d.get('rejected', 0)}, "
        f"connections {d.get('connections', 0)})",
    ]
    if d.get("revoked_at"):
        lines.append(f"revoked      {_when(d['revoked_at'])}")
    for c in d.get("credentials", []):
        extra = f", valid until {_when(c['expires_at'])}" if c["state"] == "previous" else ""
        lines.append(f"credentials  #{c['generation']} {c['state']} (issued {_when(c['created_at'])}{extra})")
    return "\n".join(lines)


def _credentials_text(d: dict[str, Any]) -> str:
    secret = {k: d[k] for k in ("key", "iv", "master_key", "key_id") if k in d}
    lines = [f"  {name:<10} {value}" for name, value in secret.items()]
    return "\n".join(["credentials (shown only now; put them on the device and keep no other copy):", *lines])


def cmd_add(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"id": args.id, "protocol": args.protocol}
    if args.key is not None:
        body["key"] = args.key
    if args.iv is not None:
        body["iv"] = args.iv
    device = api_call("POST", "/devices", body)
    if args.json:
        _print_json(device)
    else:
        print(f"registered {device['id']} ({device['protocol']})")
        print(_credentials_text(device))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    devices = api_call("GET", "/devices")["devices"]
    if args.json:
        _print_json(devices)
        return 0
    if not devices:
        print("no devices registered; add one with `medsec device add ID`")
        return 0
    rows = [[d["id"], d["protocol"], d["state"], _when(d.get("last_seen")), str(d.get("readings", 0)),
             str(d.get("rejected", 0))] for d in devices]
    print(table(rows, ["DEVICE", "PROTOCOL", "STATE", "LAST SEEN", "READINGS", "REJECTED"]))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    device = api_call("GET", f"/devices/{quote(args.id)}")
    _print_json(device) if args.json else print(_device_text(device))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    device = api_call("DELETE", f"/devices/{quote(args.id)}")
    if args.json:
        _print_json(device)
    else:
        print(f"revoked {device['id']}: its connections are closed and its key is refused")
    return 0


def parse_duration(text: str) -> float:
    """Seconds from '3600', '90s', '30m', '24h' or '7d'."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    scale = units.get(text[-1:])
    number = text[:-1] if scale else text
    try:
        value = float(number) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 3600, 30m, 24h, 7d)") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a duration cannot be negative")
    return value


def cmd_rotate(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.grace is not None:
        body["grace"] = args.grace
    for name in ("key", "iv"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    device = api_call("POST", f"/devices/{quote(args.id)}/rotate", body)
    if args.json:
        _print_json(device)
        return 0
    previous = [c for c in device["credentials"] if c["state"] == "previous"]
    print(f"rotated {device['id']}: new credentials #{device['credentials'][-1]['generation']}")
    if previous:
        print(f"the old credentials stay valid until the device first uses the new ones, "
              f"at the latest until {_when(previous[-1]['expires_at'])}")
    print(_credentials_text(device))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from None
    result = api_call("POST", "/devices/import", raw=data, content_type="application/x-ndjson")
    if args.json:
        _print_json(result)
    else:
        print(f"imported {result['imported']} device(s): {', '.join(result['devices'])}")
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    return int(provision.run(args) or 0)


def register(sub: argparse._SubParsersAction) -> None:
    dsub = actions_of(sub, "device", "register, list, show, rotate, revoke and import devices")

    def api_action(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        p = action(dsub, name, func, help_text)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    add = api_action("add", cmd_add, "register a device; prints its credentials once")
    add.add_argument("id")
    add.add_argument("--protocol", choices=("v1", "v2"), default="v1")
    add.add_argument("--key", help="v1: the device's 16-character key (generated when absent)")
    add.add_argument("--iv", help="v1: the device's 16-character IV (generated when absent)")

    api_action("list", cmd_list, "list devices (never secrets)")
    api_action("show", cmd_show, "a device's state, last seen and counters").add_argument("id")
    revoke = api_action("revoke", cmd_revoke, "revoke a device: live connections close, its key is refused")
    revoke.add_argument("id")

    rotate = api_action("rotate", cmd_rotate,
                        "issue new credentials; the old ones overlap for a grace period")
    rotate.add_argument("id")
    rotate.add_argument("--grace", type=parse_duration, metavar="DURATION",
                        help="how long the old credentials stay valid (default 24h; e.g. 0, 30m, 7d)")
    rotate.add_argument("--key", help="v1: the new key (generated when absent)")
    rotate.add_argument("--iv", help="v1: the new IV (generated when absent)")

    imp = api_action("import", cmd_import,
                     "import a legacy key file (JSON lines {id, key, iv}); all or nothing")
    imp.add_argument("file", help="the key file, or - for standard input")

    prov = action(dsub, "provision", cmd_provision, "write a registered device's settings to a Pico")
    prov.add_argument("id", help="the device id")
    prov.add_argument("extra", nargs=argparse.REMAINDER, help="options of the provisioning tool")
