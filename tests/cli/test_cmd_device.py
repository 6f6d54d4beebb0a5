"""`medsec device ...` and `medsec audit ...` against a real key-admin process."""
from __future__ import annotations

import json
import sqlite3

from services.keyadmin.audit_witness import read_witness
from tests.cli.conftest import run, start_keyadmin
from tests.support.proc import wait_until

KEY, IV = "1234567890123456", "AAAAAAAAAAAAAAAA"


def test_clear_message_when_api_not_running(env, capsys):
    code, out, err = run(capsys, "device", "list")
    assert code == 1 and "not reachable" in err and "medsec up" in err and "Traceback" not in err


def test_device_lifecycle(keyadmin, capsys, tmp_path):
    code, out, _ = run(capsys, "device", "add", "pico-1", "--key", KEY, "--iv", IV)
    assert code == 0 and KEY in out and "shown only now" in out
    code, out, _ = run(capsys, "device", "add", "pico-2", "--json")
    created = json.loads(out)
    assert code == 0 and len(created["key"]) == 16
    code, out, _ = run(capsys, "device", "list")
    assert code == 0 and out.splitlines()[0].split() == ["DEVICE", "PROTOCOL", "STATE", "LAST", "SEEN",
                                                         "READINGS", "REJECTED"]
    assert "pico-1" in out and "pico-2" in out and KEY not in out
    code, out, _ = run(capsys, "device", "show", "pico-1")
    assert code == 0 and "state        active" in out and KEY not in out
    code, out, _ = run(capsys, "device", "rotate", "pico-1", "--grace", "30m")
    assert code == 0 and "new credentials #2" in out and "valid until" in out
    assert json.loads(run(capsys, "device", "show", "pico-1", "--json")[1])["state"] == "rotating"
    code, out, _ = run(capsys, "device", "revoke", "pico-1")
    assert code == 0 and "revoked pico-1" in out
    code, _, err = run(capsys, "device", "revoke", "pico-1")
    assert code == 1 and "already revoked (HTTP 409)" in err
    code, _, err = run(capsys, "device", "show", "ghost")
    assert code == 1 and "no device ghost (HTTP 404)" in err
    code, _, err = run(capsys, "device", "add", "bad id")
    assert code == 1 and "HTTP 400" in err


def test_import(keyadmin, capsys, tmp_path):
    good = tmp_path / "keys.jsonl"
    good.write_text('{"id":"iot_med_dev_01","key":"1234567890123456","iv":"AAAAAAAAAAAAAAAA"}\n'
                    '{"id":"iot_med_dev_02","key":"abcdefghijklmnop","iv":"AAAAAAAAAAAAAAAA"}\n')
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id":"x","key":"k","iv":"AAAAAAAAAAAAAAAA"}\n')
    code, _, err = run(capsys, "device", "import", str(bad))
    assert code == 1 and "line 1: key must be exactly 16" in err
    code, out, _ = run(capsys, "device", "import", str(good))
    assert code == 0 and "imported 2 device(s): iot_med_dev_01, iot_med_dev_02" in out
    code, _, err = run(capsys, "device", "import", str(tmp_path / "missing"))
    assert code == 1 and "cannot read" in err


def test_audit_show_and_verify_names_the_edited_entry(keyadmin, env, capsys):
    for name in ("a", "b", "c"):
        run(capsys, "device", "add", name)
    run(capsys, "device", "revoke", "b")
    code, out, _ = run(capsys, "audit", "show")
    # keyadmin registers the generated service tokens at its first start (token_registered).
    rows = [line.split() for line in out.splitlines()[1:]]
    assert code == 0 and [r[4] for r in rows if r[4] != "token_registered"] == ["added"] * 3 + ["revoked"]
    b = next(int(r[0]) for r in rows if r[4:6] == ["added", "b"])
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 0 and f"intact: {len(rows)} entries" in out
    db = sqlite3.connect(env.keystore_path)
    db.execute("DROP TRIGGER audit_no_update")
    db.execute(f"""UPDATE audit SET detail = '{{"protocol": "v2"}}' WHERE seq = {b}""")
    db.commit()
    db.close()
    code, _, err = run(capsys, "audit", "verify")
    assert code == 1 and f"BROKEN at entry {b} (added b)" in err and "edited" in err


def test_truncation_and_rewrite_are_caught_and_never_witnessed(env, config_env, broker, procs, capsys):
    keyadmin = start_keyadmin(procs, env, config_env)
    for name in ("a", "b", "c"):
        run(capsys, "device", "add", name)
    last = json.loads(run(capsys, "audit", "show", "--json")[1])[-1]["seq"]
    witnessed = wait_until(lambda: (w := read_witness(env)) and w.seq == last and w, 10,
                           what=f"keyadmin to witness entry {last}")
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 0 and f"intact: {last} entries" in out and f"witness (entry {last}) matches" in out

    # Someone with write access to the key store drops the newest entry: the chain is still whole.
    db = sqlite3.connect(env.keystore_path)
    db.execute("DROP TRIGGER audit_no_delete")
    db.execute(f"DELETE FROM audit WHERE seq = {last}")
    db.commit()
    db.close()
    code, _, err = run(capsys, "audit", "verify")
    assert code == 1 and f"TRUNCATED: the broker witnessed entry {last}" in err
    assert f"ends at entry {last - 1}" in err
    log = procs.log_dir / "keyadmin.log"
    wait_until(lambda: "event=audit_log_tampered" in log.read_text(), 10, what="keyadmin's alarm")

    # New entries after the cut do not move the witness over the gap, not even after a restart.
    run(capsys, "device", "add", "d")
    procs.stop(keyadmin)
    start_keyadmin(procs, env, config_env, name="keyadmin2")
    log2 = procs.log_dir / "keyadmin2.log"
    wait_until(lambda: "event=audit_log_tampered" in log2.read_text(), 10, what="the restarted one's alarm")
    assert f"REWRITTEN: entry {last}" in log2.read_text()
    assert read_witness(env) == witnessed
    code, _, err = run(capsys, "audit", "verify")
    assert code == 1 and f"REWRITTEN: entry {last}" in err
