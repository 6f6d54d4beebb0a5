"""`medsec password ACCOUNT` (alias `medsec mqtt-password`): every generated password, by account."""
from __future__ import annotations

import json

import pytest

from services.cli.main import main
from services.common.accounts import ACCOUNTS, NODERED_ACCOUNTS
from services.common.state import init_state, load_passwords


@pytest.fixture
def env(config, config_env, monkeypatch):
    for name, value in config_env.items():
        monkeypatch.setenv(name, value)
    return config


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_generated_password_is_printed_by_account(env, capsys):
    init_state(env)
    passwords = load_passwords(env)
    assert set(ACCOUNTS) | set(NODERED_ACCOUNTS) <= set(passwords)
    for account in NODERED_ACCOUNTS + ACCOUNTS:
        for command in ("password", "mqtt-password"):
            code, out, err = run(capsys, command, account)
            assert (code, out, err) == (0, passwords[account] + "\n", ""), (command, account)
    assert len({passwords[a] for a in NODERED_ACCOUNTS}) == 3, "each login has its own password"
    # A station's broker login (added later, same file) is printed too.
    passwords["station-s1"] = "station-pw-0123456789"
    (env.mqtt_passwords_path).write_text(json.dumps(passwords))
    assert run(capsys, "password", "station-s1")[1] == "station-pw-0123456789\n"


def test_an_unknown_account_is_a_clear_error_without_any_password(env, capsys):
    init_state(env)
    passwords = load_passwords(env)
    for account in ("nodered-root", "viewer", "", "../secrets"):
        code, out, err = run(capsys, "password", account)
        assert code != 0 and out == "", account
        assert "no generated password" in err and "nodered-viewer" in err and "Traceback" not in err
        assert not [p for p in passwords.values() if p in err]


def test_before_the_first_start_it_says_what_to_do(env, capsys):
    code, out, err = run(capsys, "password", "nodered-admin")
    assert code != 0 and out == "" and "medsec up" in err
