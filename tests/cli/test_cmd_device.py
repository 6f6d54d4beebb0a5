"""`medsec device ...` and `medsec audit ...` against a real key-admin process."""
from __future__ import annotations

import json
import sqlite3
import sys

import pytest

from services.cli.main import main
from services.common.state import init_state
from services.keyadmin.audit_witness import read_witness
from tests.support.proc import port_open, wait_until

KEY, IV = "1234567890123456", "AAAAAAAAAAAAAAAA"


@pytest.fixture
def env(config, config_env, monkeypatch):
    init_state(config)
    for name, value in config_env.items():
        monkeypatch.setenv(name, value)
    return config


def start_keyadmin(procs, config, config_env, name: str = "keyadmin"):
    proc = procs.start(name, [sys.executable, "-m", "services.keyadmin"], env=config_env)
    wait_until(lambda: port_open(config.admin_port) or proc.poll() is not None, 15, what="keyadmin")
    assert proc.poll() is None
    return proc


@pytest.fixture
def keyadmin(env, config_env, procs):
    return start_keyadmin(procs, env, config_env)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


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
    assert code == 0 and [line.split()[4] for line in out.splitlines()[1:]] == ["added"] * 3 + ["revoked"]
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 0 and "intact: 4 entries" in out
    db = sqlite3.connect(env.keystore_path)
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("""UPDATE audit SET detail = '{"protocol": "v2"}' WHERE seq = 2""")
    db.commit()
    db.close()
    code, _, err = run(capsys, "audit", "verify")
    assert code == 1 and "BROKEN at entry 2 (added b)" in err and "edited" in err


def test_truncation_and_rewrite_are_caught_and_never_witnessed(env, config_env, broker, procs, capsys):
    keyadmin = start_keyadmin(procs, env, config_env)
    for name in ("a", "b", "c"):
        run(capsys, "device", "add", name)
    witnessed = wait_until(lambda: (w := read_witness(env)) and w.seq == 3 and w, 10,
                           what="keyadmin to witness entry 3")
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 0 and "intact: 3 entries" in out and "witness (entry 3) matches" in out

    # Someone with write access to the key store drops the newest entry: the chain is still whole.
    db = sqlite3.connect(env.keystore_path)
    db.execute("DROP TRIGGER audit_no_delete")
    db.execute("DELETE FROM audit WHERE seq = 3")
    db.commit()
    db.close()
    code, _, err = run(capsys, "audit", "verify")
    assert code == 1 and "TRUNCATED: the broker witnessed entry 3" in err and "ends at entry 2" in err
    log = procs.log_dir / "keyadmin.log"
    wait_until(lambda: "event=audit_log_tampered" in log.read_text(), 10, what="keyadmin's alarm")

    # New entries after the cut do not move the witness over the gap, not even after a restart.
    run(capsys, "device", "add", "d")
    procs.stop(keyadmin)
    start_keyadmin(procs, env, config_env, name="keyadmin2")
    log2 = procs.log_dir / "keyadmin2.log"
    wait_until(lambda: "event=audit_log_tampered" in log2.read_text(), 10, what="the restarted one's alarm")
    assert "REWRITTEN: entry 3" in log2.read_text()
    assert read_witness(env) == witnessed
    code, _, err = run(capsys, "audit", "verify")
    assert code == 1 and "REWRITTEN: entry 3" in err
