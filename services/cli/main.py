"""`medsec` entry point. Each `cmd_*.py` module in this package adds its subcommands.

A module defines `register(subparsers)`, adding parsers whose default `func`
takes the parsed args and returns an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import services.cli as cli_package
from services.cli.errors import CliError
from services.common.config import ConfigError, bad_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medsec", description="Secure telemetry gateway for medical sensors."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(cli_package.__path__), key=lambda i: i.name):
        if info.name.startswith("cmd_"):
            importlib.import_module(f"services.cli.{info.name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"medsec: {exc}", file=sys.stderr)
        return exc.exit_code
    except ConfigError as exc:  # a bad MEDSEC_* value, from whichever command read the config
        return bad_config("medsec", exc)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
