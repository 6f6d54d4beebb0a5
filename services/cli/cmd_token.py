"""`medsec token create | list | revoke`: key-admin API tokens with scopes (admin scope needed).

Scopes: read (devices and their state), manage (also add, rotate, revoke, import, stations),
admin (also tokens and the audit log); stations:read (station keys only, what dispatch holds).
A new token's value is printed once, by `create`; the store keeps only its SHA-256.
"""
from __future__ import annotations

import argparse
import json
import sys

from services.cli.actions import action, actions_of
from services.cli.cmd_device import _when, api_call, table
from services.keystore.models import SCOPES


def cmd_create(args: argparse.Namespace) -> int:
    answer = api_call("POST", "/tokens", {"name": args.name, "scope": args.scope})
    print(answer["token"])
    print(f"token {answer['name']!r} (scope {answer['scope']}) created: shown only now; "
          "give it to its holder and keep no other copy", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    tokens = api_call("GET", "/tokens")["tokens"]
    if args.json:
        print(json.dumps(tokens, indent=2))
        return 0
    rows = [[t["name"], t["scope"], "revoked" if t.get("revoked_at") else
             ("INTEGRITY FAILED" if t.get("integrity") == "failed" else "active"),
             _when(t.get("created_at")) if t.get("created_at") else "-",
             _when(t.get("revoked_at")) if t.get("revoked_at") else "-"] for t in tokens]
    print(table(rows, ["NAME", "SCOPE", "STATE", "CREATED", "REVOKED"]))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    answer = api_call("DELETE", f"/tokens/{args.name}")
    print(f"token {answer['name']!r} revoked: requests with it now get 401")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    tsub = actions_of(sub, "token", "key-admin API tokens with scopes: create, list, revoke")
    create = action(tsub, "create", cmd_create, "create a token; prints its value once")
    create.add_argument("name", help="1-64 of A-Z a-z 0-9 _ . - (the name audit entries show)")
    create.add_argument("--scope", required=True, choices=SCOPES)
    listing = action(tsub, "list", cmd_list, "names, scopes and states; never a value")
    listing.add_argument("--json", action="store_true")
    action(tsub, "revoke", cmd_revoke, "revoke a token: requests with it get 401").add_argument("name")
