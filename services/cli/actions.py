"""The argparse shape `medsec <command> ACTION ...` shares: a command whose action is required,
each action a parser that names the function running it (args.func)."""
from __future__ import annotations

import argparse
from collections.abc import Callable


def actions_of(sub: argparse._SubParsersAction, command: str, help_text: str) -> argparse._SubParsersAction:
    """`medsec <command>`: its actions, one of which must be given."""
    parser = sub.add_parser(command, help=help_text)
    return parser.add_subparsers(dest=f"{command}_command", metavar="ACTION", required=True)


def action(actions: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], int],
           help_text: str) -> argparse.ArgumentParser:
    """One action, run by func; add its arguments to the parser returned."""
    parser = actions.add_parser(name, help=help_text)
    parser.set_defaults(func=func)
    return parser
