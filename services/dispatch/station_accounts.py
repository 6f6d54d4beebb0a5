"""Broker accounts of stations (`station-<id>`): generated password, broker files, reload.

Passwords join the generated ones in secrets/mqtt-passwords.json (0600), so
`medsec mqtt-password station-<id>` prints them; the broker's password file is
regenerated and Mosquitto reloaded (SIGHUP) so the account works at once.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import xmlrpc.client
from collections.abc import Iterator
from contextlib import contextmanager

from services.broker.mosquitto import write_broker_files
from services.common.config import Config
from services.common.state import generate_password, load_passwords, write_secret
from services.dispatch.topics import account


@contextmanager
def _locked(config: Config) -> Iterator[None]:
    config.run_dir.mkdir(parents=True, exist_ok=True)
    with open(config.run_dir / "mqtt-passwords.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def reload_broker(config: Config) -> bool:
    """SIGHUP Mosquitto: run/mosquitto.pid if present, else through the stack's supervisord."""
    pid_file = config.run_dir / "mosquitto.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text().strip()), signal.SIGHUP)
            return True
        except (ValueError, ProcessLookupError, PermissionError):
            return False
    if (config.run_dir / "supervisord.sock").exists():
        try:
            from services.stack.control import rpc

            rpc(config).supervisor.signalProcess("mosquitto", "HUP")
            return True
        except (OSError, xmlrpc.client.Error, ImportError):
            return False
    return False


def provision(config: Config, station: str) -> tuple[str, bool]:
    """(password, created): the station's broker password, generated on first call."""
    name = account(station)
    with _locked(config):
        passwords = load_passwords(config)
        if name in passwords:
            return passwords[name], False
        passwords[name] = generate_password()
        write_secret(config.mqtt_passwords_path, json.dumps(passwords, indent=1).encode())
        write_broker_files(config)
    reload_broker(config)
    return passwords[name], True


def deprovision(config: Config, station: str) -> bool:
    name = account(station)
    with _locked(config):
        passwords = load_passwords(config)
        if passwords.pop(name, None) is None:
            return False
        write_secret(config.mqtt_passwords_path, json.dumps(passwords, indent=1).encode())
        write_broker_files(config)
    reload_broker(config)
    return True
