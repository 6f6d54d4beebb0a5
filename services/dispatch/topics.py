"""Topic names and broker account names of the dispatch workflow (one place, so both ends agree).

Each station logs in as `station-<id>` and owns the subtree `medsec/dispatch/station-<id>/`
(the broker's %u pattern rules, services/common/accounts.py):

    request  station -> server   "may I have my file?"
    result   station -> server   a result, or done after a pass
    params   server -> station   the sealed parameter file
    verdict  server -> station   pass / fail / refused / ack
    go       server -> station   the predecessor is done: start
"""
from __future__ import annotations

from services.common.accounts import STATION_PREFIX
from services.common.stations import SERVER_ID, account, valid_station_id

ROOT = "medsec/dispatch"
STATUS = f"{ROOT}/status"
UPSTREAM = ("request", "result")
DOWNSTREAM = ("params", "verdict", "go")


def topic(station: str, leaf: str) -> str:
    return f"{ROOT}/{account(station)}/{leaf}"


def subscriptions() -> list[str]:
    """What the server listens to."""
    return [f"{ROOT}/+/{leaf}" for leaf in UPSTREAM]


def parse_upstream(name: str) -> tuple[str, str] | None:
    """`medsec/dispatch/station-s1/result` -> ("s1", "result"); None for anything else."""
    parts = name.split("/")
    if len(parts) != 4 or "/".join(parts[:2]) != ROOT or parts[3] not in UPSTREAM:
        return None
    if not parts[2].startswith(STATION_PREFIX):
        return None
    station = parts[2][len(STATION_PREFIX):]
    return (station, parts[3]) if valid_station_id(station) and station != SERVER_ID else None
