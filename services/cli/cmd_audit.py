"""`medsec audit show | verify`: the key-admin audit log, and a check of its keyed hash chain."""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

from services.cli.actions import action, actions_of
from services.cli.cmd_device import api_call, table
from services.cli.errors import CliError
from services.common.config import Config
from services.common.state import StateError
from services.keyadmin.audit_witness import Witness, mismatch, read_witness
from services.keystore.audit import GENESIS, AuditEntry

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
    """The chain is keyed with a key derived from the master key, so keyadmin checks it
    (GET /audit/verify); this compares the result with the broker's witness (truncation)."""
    # The witness first: it never runs ahead of the log, so entries added meanwhile are no alarm.
    try:
        witness, unchecked = read_witness(Config.from_env()), ""
    except (OSError, StateError) as exc:
        witness, unchecked = None, f"truncation not checked: {exc}"
    check = api_call("GET", "/audit/verify")
    broken = check.get("broken")
    if not check.get("intact") or broken:
        broken = broken or {}
        raise CliError(f"audit log BROKEN at entry {broken.get('seq')} ({broken.get('action')} "
                       f"{broken.get('device') or ''}): {broken.get('reason')}".replace(" )", ")"))
    head = check.get("head")
    print(f"audit log intact: {check['entries']} entries, keyed chain head "
          f"{head['hash'][:16] if head else GENESIS[:16]}")
    if unchecked or witness is None:
        print(unchecked or witness_check([], None, 0))
        return 0
    page = api_call("GET", f"/audit?after={witness.seq - 1}&limit=1")["entries"]
    entries = [_entry(e) for e in page if e["seq"] == witness.seq]
    print(witness_check(entries, witness, head["seq"] if head else 0))
    return 0


def witness_check(entries: list[AuditEntry], witness: Witness | None, last_seq: int) -> str:
    """Compare the log with the head keyadmin witnessed on the broker (truncation): `entries`
    holds the log's entry at the witness's seq, if it still has one; `last_seq` its last."""
    if witness is None:
        return "truncation not checked: no witness on the broker yet (keyadmin publishes one a second)"
    entry = next((e for e in entries if e.seq == witness.seq), None)
    problem = mismatch(witness, entry, last_seq)
    if problem:
        raise CliError(f"audit log {problem}")
    return f"the broker's witness (entry {witness.seq}) matches: nothing was cut off before it"


def register(sub: argparse._SubParsersAction) -> None:
    asub = actions_of(sub, "audit", "the key-admin audit log: show it, verify its hash chain")
    show = action(asub, "show", cmd_show, "list audit entries, oldest first")
    show.add_argument("--device", help="only entries about this device")
    show.add_argument("-n", "--limit", type=int, default=0, help="only the last N entries")
    show.add_argument("--json", action="store_true")
    action(asub, "verify", cmd_verify, "check the hash chain; names the first broken entry")
