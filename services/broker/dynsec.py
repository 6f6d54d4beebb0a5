"""Mosquitto's dynamic-security plugin: its config file and its admin commands, from the policy.

Why the plugin and not an acl_file: an acl_file never refuses a SUBSCRIBE, it only
withholds delivery (eclipse-mosquitto/mosquitto#2042); the plugin answers a
subscription outside the account's rights with a failure SUBACK.

Each broker login becomes a plugin client with one role of the same name, holding
the account's rules from POLICY. Mosquitto 2.0's plugin has no %u substitution, so
rules for EVERY_ACCOUNT are written out with the account's name in each role.
Pure functions: dicts in, dicts out; services/broker/dynsec_admin.py sends commands.
"""
from __future__ import annotations

import base64
import hashlib
import secrets

from services.common.accounts import EVERY_ACCOUNT, POLICY, Rule

PBKDF2_ITERATIONS = 101  # the plugin's own default (PBKDF2-SHA512)
# What a policy access word allows, as the plugin's ACL types.
_ACL_TYPES = {
    "read": ("subscribePattern", "publishClientReceive"),
    "write": ("publishClientSend",),
    "readwrite": ("subscribePattern", "publishClientReceive", "publishClientSend"),
}
# Anything not granted by a role is denied; unsubscribing is always allowed.
DEFAULT_ACCESS = {"publishClientSend": False, "publishClientReceive": False,
                  "subscribe": False, "unsubscribe": True}


def password_fields(password: str, salt: bytes | None = None) -> dict:
    """The plugin's stored password: PBKDF2-SHA512, base64 hash and salt."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": PBKDF2_ITERATIONS}


def role_acls(account: str, policy: tuple[Rule, ...] = POLICY) -> list[dict]:
    topics = [(r.access, r.pattern.replace("%u", account)) for r in policy
              if r.account in (account, EVERY_ACCOUNT)]
    acls = [{"acltype": kind, "topic": topic, "allow": True}
            for access, topic in topics for kind in _ACL_TYPES[access]]
    # Mosquitto 2.0 checks a shared subscription with its `$share/<group>/` prefix (EMQX strips
    # it): what an account may subscribe to, it may also share with any group.
    return acls + [{**acl, "topic": f"$share/+/{acl['topic']}"} for acl in acls
                   if acl["acltype"] == "subscribePattern" and not acl["topic"].startswith("$")]


def config(logins: dict[str, str], policy: tuple[Rule, ...] = POLICY) -> dict:
    """The plugin's whole config file for these broker logins (account -> password)."""
    return {
        "clients": [{"username": a, **password_fields(pw), "roles": [{"rolename": a}]}
                    for a, pw in sorted(logins.items())],
        "roles": [{"rolename": a, "acls": role_acls(a, policy)} for a in sorted(logins)],
        "defaultACLAccess": DEFAULT_ACCESS,
    }


def create_commands(account: str, password: str, policy: tuple[Rule, ...] = POLICY) -> list[dict]:
    """Commands that add one login to a running broker (same result as config())."""
    return [
        {"command": "createRole", "rolename": account, "acls": role_acls(account, policy)},
        {"command": "createClient", "username": account, "password": password,
         "roles": [{"rolename": account}]},
    ]


def delete_commands(account: str) -> list[dict]:
    """Commands that remove one login; deleting the client disconnects it at once."""
    return [{"command": "deleteClient", "username": account},
            {"command": "deleteRole", "rolename": account}]
