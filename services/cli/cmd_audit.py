"""`medsec audit show | verify`: the key-admin audit log, and a check of its hash chain."""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

from services.cli.cmd_device import api_call, table
from services.cli.errors import CliError
from services.common.config import Config
from services.common.state import StateError
from services.keyadmin.audit_witness import Witness, mismatch, read_witness
from services.keystore.audit import GENESIS, AuditEntry, audit_hash, verify_chain

PAGE = 1000


def fetch_all() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    after = 0
    while True:
        page = api_call("GET", f"/audit?after={after}&limit={PAGE}")
        entries += page["entries"]
        if page.get("next") is None or not page["entries"]:
            return entries
        after = page["next"]


def _entry(raw: dict[str, Any]) -> AuditEntry:
    return AuditEntry(raw["seq"], raw["ts"], raw["actor"], raw["action"], raw.get("device"),
                      raw.get("detail") or {}, raw["prev"], raw["hash"])


def why_broken(entry: AuditEntry, prev_hash: str) -> str:
    if entry.prev != prev_hash:
        return "its link to the previous entry is broken (an entry before it was removed or changed)"
    if audit_hash(prev_hash, entry.seq, entry.ts, entry.actor, entry.action, entry.device,
                  entry.detail) != entry.hash:
        return "its content does not match its hash (the entry was edited)"
    return "its sequence number is out of order (an entry was removed)"


def cmd_show(args: argparse.Namespace) -> int:
    entries = fetch_all()
    if args.device:
        entries = [e for e in entries if e.get("device") == args.device]
    entries = entries[-args.limit:] if args.limit else entries
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    rows = [[str(e["seq"]), time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["ts"])), e["actor"],
             e["action"], e.get("device") or "-", json.dumps(e.get("detail") or {}, sort_keys=True)[:60]]
            for e in entries]
    header = ["SEQ", "TIME", "ACTOR", "ACTION", "DEVICE", "DETAIL"]
    print(table(rows, header) if rows else "the audit log is empty")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    # The witness first: it never runs ahead of the log, so entries added meanwhile are no alarm.
    try:
        witness, unchecked = read_witness(Config.from_env()), ""
    except (OSError, StateError) as exc:
        witness, unchecked = None, f"truncation not checked: {exc}"
    entries = [_entry(e) for e in fetch_all()]
    broken = verify_chain(entries)
    if broken is not None:
        index = entries.index(broken)
        prev_hash = entries[index - 1].hash if index else GENESIS
        raise CliError(f"audit log BROKEN at entry {broken.seq} ({broken.action} "
                       f"{broken.device or ''}): {why_broken(broken, prev_hash)}".replace(" )", ")"))
    head = entries[-1].hash[:16] if entries else GENESIS[:16]
    print(f"audit log intact: {len(entries)} entries, chain head {head}")
    print(unchecked or witness_check(entries, witness))
    return 0


def witness_check(entries: list[AuditEntry], witness: Witness | None) -> str:
    """Compare the log's end with the head keyadmin witnessed on the broker (truncation)."""
    if witness is None:
        return "truncation not checked: no witness on the broker yet (keyadmin publishes one a second)"
    entry = next((e for e in entries if e.seq == witness.seq), None)
    problem = mismatch(witness, entry, entries[-1].seq if entries else 0)
    if problem:
        raise CliError(f"audit log {problem}")
    return f"the broker's witness (entry {witness.seq}) matches: nothing was cut off before it"


def register(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="the key-admin audit log: show it, verify its hash chain")
    asub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    show = asub.add_parser("show", help="list audit entries, oldest first")
    show.add_argument("--device", help="only entries about this device")
    show.add_argument("-n", "--limit", type=int, default=0, help="only the last N entries")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)
    verify = asub.add_parser("verify", help="check the hash chain; names the first broken entry")
    verify.set_defaults(func=cmd_verify)
