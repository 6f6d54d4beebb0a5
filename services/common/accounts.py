"""Broker accounts and their topic rights: the single source of truth.

Mosquitto's dynamic-security config (and, in compose, the EMQX rules) are
generated from POLICY. Anything not listed is denied; no anonymous access.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Access = Literal["read", "write", "readwrite"]


@dataclass(frozen=True)
class Rule:
    account: str
    access: Access
    pattern: str  # MQTT filter; %u stands for the account name


# A rule for EVERY_ACCOUNT applies to every account, with %u replaced by the account's name.
EVERY_ACCOUNT = "*"
# Stations of seed workflow 2 (services/dispatch) log in as `station-<id>`.
STATION_PREFIX = "station-"

POLICY: tuple[Rule, ...] = (
    # proxy: the only writer of the internal ingest bus; follows key events for live revocation.
    Rule("proxy", "write", "medsec/ingest/#"),
    Rule("proxy", "write", "medsec/events/#"),
    Rule("proxy", "read", "medsec/keys/events"),
    # publisher: the only writer of the public tree.
    Rule("publisher", "read", "medsec/ingest/#"),
    Rule("publisher", "readwrite", "medsec/events/#"),
    Rule("publisher", "write", "Pico/#"),
    # keyadmin: announces added / rotated / revoked keys, and keeps the audit log's head as a
    # retained witness (reads it back at start so it never moves it backwards).
    Rule("keyadmin", "write", "medsec/keys/events"),
    Rule("keyadmin", "readwrite", "medsec/audit/head"),
    # dispatch: the parameter server of seed workflow 2.
    Rule("dispatch", "readwrite", "medsec/dispatch/#"),
    Rule("dispatch", "read", "medsec/keys/events"),
    # dashboard: read-only on the public tree (Node-RED and people's MQTT clients).
    Rule("dashboard", "read", "Pico/#"),
    # history: read-only on the published readings, nothing else (services/history stores them).
    Rule("history", "read", "Pico/+/json"),
    # monitor: read-only on the internal bus, for operators and tests.
    Rule("monitor", "read", "medsec/#"),
    # brokeradmin: adds and removes station logins on a running Mosquitto through the
    # dynamic-security plugin's command topic (services/broker/dynsec_admin.py).
    Rule("brokeradmin", "readwrite", "$CONTROL/dynamic-security/#"),
    # stations (`station-<id>`, provisioned per station): read only their own subtree's
    # server topics, write only their own request and result topics.
    Rule(EVERY_ACCOUNT, "read", "medsec/dispatch/%u/params"),
    Rule(EVERY_ACCOUNT, "read", "medsec/dispatch/%u/verdict"),
    Rule(EVERY_ACCOUNT, "read", "medsec/dispatch/%u/go"),
    Rule(EVERY_ACCOUNT, "write", "medsec/dispatch/%u/request"),
    Rule(EVERY_ACCOUNT, "write", "medsec/dispatch/%u/result"),
)

ACCOUNTS: tuple[str, ...] = tuple(dict.fromkeys(r.account for r in POLICY if r.account != EVERY_ACCOUNT))


# Node-RED's logins, one per role (Node-RED user names viewer, operator, admin). Generated with
# the broker passwords and printed by `medsec password ACCOUNT`; never broker logins.
NODERED_ACCOUNTS: tuple[str, ...] = ("nodered-viewer", "nodered-operator", "nodered-admin")
