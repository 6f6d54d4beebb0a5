"""`medsec token create | list | revoke` and `medsec audit verify` on a keyed chain, against a real
key-admin process."""
from __future__ import annotations

import json
import sqlite3

import pytest

from services.common.state import SERVICE_TOKENS, admin_token
from services.keystore.audit import GENESIS, audit_hash
from tests.cli.conftest import run
from tests.support.stack import api


def test_token_create_list_revoke(keyadmin, env, capsys, procs):
    code, out, err = run(capsys, "token", "create", "night-shift", "--scope", "read")
    value = out.strip()
    assert code == 0 and len(value) >= 40 and "\n" not in value and "shown only now" in err
    assert api(env, "GET", "/devices", token=value)[0] == 200
    status, body = api(env, "POST", "/devices", {"id": "x"}, token=value)
    assert status == 403 and body == {"error": "this token's scope is read; POST /devices needs manage"}

    code, out, _ = run(capsys, "token", "list")
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines()[1:]}
    assert code == 0 and rows["night-shift"] == ["read", "active"] and rows["operator"] == ["admin", "active"]
    assert all(rows[name][0] == scope for name, scope in SERVICE_TOKENS.items())
    code, out, _ = run(capsys, "token", "list", "--json")
    assert code == 0 and value not in out and {"name", "scope"} <= set(json.loads(out)[0])

    code, out, _ = run(capsys, "token", "create", "night-shift", "--scope", "admin")
    assert code == 1
    code, out, _ = run(capsys, "token", "revoke", "night-shift")
    assert code == 0 and "revoked" in out
    assert api(env, "GET", "/devices", token=value) == (401, {"error": "unknown or revoked token"})
    code, out, _ = run(capsys, "token", "list")
    assert [line.split()[2] for line in out.splitlines() if line.startswith("night-shift")] == ["revoked"]
    code, _, err = run(capsys, "token", "revoke", "night-shift")
    assert code == 1 and "no active token" in err

    audit = json.loads(run(capsys, "audit", "show", "--json")[1])
    mine = [(e["actor"], e["action"]) for e in audit if e["detail"].get("name") == "night-shift"]
    assert mine == [("operator", "token_created"), ("operator", "token_revoked")]
    logs = "".join(p.read_text() for p in procs.log_dir.glob("*.log"))
    assert value not in logs and value not in json.dumps(audit) and admin_token(env) not in logs


@pytest.mark.parametrize("argv", [["token", "create", "x", "--scope", "root"], ["token", "create", "x"]])
def test_token_create_needs_a_known_scope(env, capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        run(capsys, *argv)
    assert exit_.value.code == 2


def test_a_manage_token_cannot_make_tokens(keyadmin, env, capsys, monkeypatch):
    value = run(capsys, "token", "create", "ops", "--scope", "manage")[1].strip()
    status, body = api(env, "POST", "/tokens", {"name": "escalate", "scope": "admin"}, token=value)
    assert status == 403 and body["error"] == "this token's scope is manage; POST /tokens needs admin"


@pytest.mark.parametrize("key", [None, b"\x01" * 32], ids=["plain-sha256", "wrong-key"])
def test_audit_verify_fails_on_a_recomputed_chain(keyadmin, env, capsys, key):
    for name in ("a", "b"):
        run(capsys, "device", "add", name)
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 0 and "intact" in out
    entries = json.loads(run(capsys, "audit", "show", "--json")[1])
    db = sqlite3.connect(env.keystore_path)
    db.execute("DROP TRIGGER audit_no_update")
    prev = GENESIS
    for e in entries:  # every entry edited and the whole chain recomputed, consistently
        actor = "mallory" if e["device"] == "b" else e["actor"]
        digest = audit_hash(key, prev, e["seq"], e["ts"], actor, e["action"], e["device"], e["detail"])
        db.execute("UPDATE audit SET actor = ?, prev = ?, hash = ? WHERE seq = ?",
                   (actor, prev, digest, e["seq"]))
        prev = digest
    db.commit()
    db.close()
    code, _, err = run(capsys, "audit", "verify")
    assert code == 1 and f"BROKEN at entry {entries[0]['seq']}" in err and "without the key" in err
