"""`medsec device provision ID`: register a device and write the settings files its firmware reads.

The gateway generates the device's keys (POST /devices, or rotate for a device
that exists with --rotate) and this writes them, with the server and Wi-Fi
settings, into settings.json and secrets.json (0600) for `make flash` to copy,
so nobody types keys by hand. It also generates "Key 1", the key the
configuration page asks for, and prints it once: it is what a technician types
on the page, never a gateway key.
"""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import json
import os
import secrets
import string
import sys
from pathlib import Path
from typing import Any

from services.cli.errors import CliError

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "firmware" / "build" / "device"
KEY1_ALPHABET = string.ascii_letters + string.digits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server-ip", required=True, help="the gateway's IPv4 address as the device sees it")
    parser.add_argument(
        "--server-port", type=int, default=9998, help="the gateway's device port (default 9998)"
    )
    parser.add_argument("--wifi-ssid", required=True, help="the Wi-Fi network the device joins")
    parser.add_argument("--wifi-password", help="Wi-Fi password (better: MEDSEC_WIFI_PASSWORD or the prompt)")
    parser.add_argument(
        "--protocol",
        choices=("v1", "v2"),
        default="v2",
        help="v2 for devices we ship (default); v1 for legacy gateways",
    )
    parser.add_argument(
        "--net",
        choices=("esp8266", "wlan"),
        default="esp8266",
        help="esp8266: Pico + ESP-01 over UART0 (original board); wlan: Pico W",
    )
    parser.add_argument("--interval-ms", type=int, default=1000, help="time between readings (default 1000)")
    parser.add_argument("--config-key", help="Key 1 for the configuration page (16 characters; generated)")
    parser.add_argument("--rotate", action="store_true", help="the device exists: issue new credentials")
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"directory for settings.json and secrets.json (default {DEFAULT_OUT})",
    )


def _check(args: argparse.Namespace) -> None:
    try:
        if ipaddress.ip_address(args.server_ip).version != 4:
            raise ValueError
    except ValueError:
        raise CliError(f"--server-ip must be an IPv4 address, got {args.server_ip!r}") from None
    if not 1024 <= args.server_port <= 65535:
        raise CliError("--server-port must be 1024-65535")
    if not 1 <= len(args.wifi_ssid.encode()) <= 32:
        raise CliError("--wifi-ssid must be 1-32 bytes")
    if args.config_key is not None and (
        len(args.config_key) != 16 or not args.config_key.isprintable() or not args.config_key.isascii()
    ):
        raise CliError("--config-key must be 16 printable ASCII characters")
    if not 100 <= args.interval_ms <= 3_600_000:
        raise CliError("--interval-ms must be 100 to 3600000")


def _wifi_password(args: argparse.Namespace) -> str:
    password = args.wifi_password
    if password is None:
        password = os.environ.get("MEDSEC_WIFI_PASSWORD")
    if password is None and sys.stdin.isatty():
        password = getpass.getpass(f"Wi-Fi password for {args.wifi_ssid} (empty for an open network): ")
    password = password or ""
    if password and not 8 <= len(password.encode()) <= 63:
        raise CliError("the Wi-Fi password must be empty or 8-63 characters")
    return password


def _credentials(args: argparse.Namespace, device_id: str) -> dict[str, Any]:
    from services.cli.cmd_device import api_call

    if args.rotate:
        return api_call("POST", f"/devices/{device_id}/rotate", {})
    return api_call("POST", "/devices", {"id": device_id, "protocol": args.protocol})


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def device_files(
    device_id: str, creds: dict[str, Any], args: argparse.Namespace, wifi_password: str, key1: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings.json, secrets.json) as firmware/lib/settings.py reads them."""
    protocol = creds.get("protocol", args.protocol)
    site = {
        "device_id": device_id,
        "server_ip": args.server_ip,
        "server_port": args.server_port,
        "wifi_ssid": args.wifi_ssid,
        "protocol": protocol,
        "net": args.net,
        "variant": "chained",
        "interval_ms": args.interval_ms,
    }
    secret: dict[str, Any] = {"wifi_password": wifi_password, "config_key": key1}
    if protocol == "v2":
        secret.update(v2_master_key=creds["master_key"], v2_key_id=creds["key_id"])
    else:
        secret.update(v1_key=creds["key"], v1_iv=creds["iv"])
    return site, secret


def run(args: argparse.Namespace) -> int:
    parser = argparse.ArgumentParser(prog=f"medsec device provision {args.id}")
    add_arguments(parser)
    try:
        opts = parser.parse_args(list(getattr(args, "extra", None) or []))
    except SystemExit as exc:
        if not exc.code:
            return 0  # --help
        raise CliError(
            "bad provisioning options (see medsec device provision ID --help)", exit_code=int(exc.code or 2)
        ) from None
    _check(opts)
    wifi_password = _wifi_password(opts)
    key1 = opts.config_key or "".join(secrets.choice(KEY1_ALPHABET) for _ in range(16))
    creds = _credentials(opts, args.id)
    site, secret = device_files(args.id, creds, opts, wifi_password, key1)
    out: Path = opts.out
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write(out / "secrets.json", secret)
    _write(out / "settings.json", site)
    print(
        f"device {args.id} ({site['protocol']}, {opts.net}) provisioned: "
        f"{out}/settings.json, {out}/secrets.json"
    )
    print(f"configuration page Key 1: {key1}   (type it on http://192.168.4.1/ in configuration mode)")
    print(f"next: make flash PORT=/dev/ttyACM0 DEVICE={out}")
    return 0
