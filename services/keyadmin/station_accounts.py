"""Broker accounts of stations (`station-<id>`): generated password, broker file, running broker.

Passwords join the generated ones in secrets/mqtt-passwords.json (0600), so
`medsec mqtt-password station-<id>` prints them. The running broker is told at
once, so a new station can log in straight away and a removed one is
disconnected: Mosquitto through its dynamic-security plugin (whose file is also
regenerated, for the next start), EMQX (compose, MEDSEC_EMQX_API) through its REST API.
"""
from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager

from services.broker import dynsec, dynsec_admin, emqx_admin
from services.broker.mosquitto import write_dynsec_file
from services.common.config import Config
from services.common.state import generate_password, load_passwords, write_secret
from services.common.stations import account


@contextmanager
def _locked(config: Config) -> Iterator[None]:
    config.run_dir.mkdir(parents=True, exist_ok=True)
    with open(config.run_dir / "mqtt-passwords.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _save(config: Config, passwords: dict[str, str], name: str) -> None:
    """Store the passwords, then give the running broker `name`'s login, or take it away."""
    write_secret(config.mqtt_passwords_path, json.dumps(passwords, indent=1).encode())
    password = passwords.get(name)
    if config.emqx_api_url:
        if password is None:
            emqx_admin.remove_login(config, name)
        else:
            emqx_admin.add_login(config, name, password)
        return
    write_dynsec_file(config)
    commands = dynsec.delete_commands(name) if password is None else dynsec.create_commands(name, password)
    dynsec_admin.send(config, commands)


def provision(config: Config, station: str) -> tuple[str, bool]:
    """(password, created): the station's broker password, generated on first call.
    Raises BrokerError if a running broker refuses the new login."""
    name = account(station)
    with _locked(config):
        passwords = load_passwords(config)
        if name in passwords:
            return passwords[name], False
        passwords[name] = generate_password()
        _save(config, passwords, name)
    return passwords[name], True


def deprovision(config: Config, station: str) -> bool:
    name = account(station)
    with _locked(config):
        passwords = load_passwords(config)
        if passwords.pop(name, None) is None:
            return False
        _save(config, passwords, name)
    return True
