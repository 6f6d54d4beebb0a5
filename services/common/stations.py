"""Dispatch stations as both ends name them: the dispatch service and the key-admin stations API.

A station's id, its broker account (`station-<id>`), the id the dispatch
server itself uses, and where the server's public key lies in the state dir.
"""
from __future__ import annotations

from pathlib import Path

from services.common.accounts import STATION_PREFIX
from services.common.config import Config, valid_device_id

SERVER_ID = "dispatch"


def account(station: str) -> str:
    return f"{STATION_PREFIX}{station}"


def valid_station_id(station: object) -> bool:
    return valid_device_id(station) and station != SERVER_ID


def dispatch_dir(config: Config) -> Path:
    return config.home / "dispatch"


def server_public_path(config: Config) -> Path:
    return dispatch_dir(config) / "server_public.pem"
