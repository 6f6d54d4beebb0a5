"""Independent evaluators of the two generated ACL formats (Mosquitto dynamic security, EMQX),
for the equivalence test.

Each parses the generated text (not the policy it came from) and answers
allowed(user, topic, action) for a concrete topic; action is "publish" or
"subscribe" (receive).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass


def topic_matches(filter_: str, topic: str) -> bool:
    """MQTT filter matching (+ one level, # the rest, $-topics not matched by leading wildcards)."""
    f, t = filter_.split("/"), topic.split("/")
    if topic.startswith("$") and f[0] in ("+", "#"):
        return False
    for i, part in enumerate(f):
        if part == "#":
            return True
        if i >= len(t):
            return False
        if part != "+" and part != t[i]:
            return False
    return len(f) == len(t)


class DynsecAcl:
    """Mosquitto dynamic-security config: a client's roles grant ACLs; defaultACLAccess decides the rest.

    A concrete topic needs subscribePattern and publishClientReceive to be received,
    publishClientSend to be published. Only `allow` entries are generated; a deny is rejected here.
    """

    def __init__(self, text: str) -> None:
        doc = json.loads(text)
        roles = {r["rolename"]: r.get("acls", []) for r in doc["roles"]}
        self.acls = {c["username"]: [a for role in c.get("roles", []) for a in roles[role["rolename"]]]
                     for c in doc["clients"]}
        self.default = doc["defaultACLAccess"]
        assert all(a["allow"] for acls in self.acls.values() for a in acls), "deny entries unsupported"

    def _grants(self, user: str, kind: str, topic: str) -> bool:
        acls = self.acls.get(user, [])
        granted = any(a["acltype"] == kind and topic_matches(a["topic"], topic) for a in acls)
        return granted or bool(self.default.get(kind if kind.startswith("publish") else "subscribe"))

    def allowed(self, user: str, topic: str, action: str) -> bool:
        if action == "publish":
            return self._grants(user, "publishClientSend", topic)
        return (self._grants(user, "subscribePattern", topic)
                and self._grants(user, "publishClientReceive", topic))


_TOKEN = re.compile(r'\s*(?:(%%[^\n]*)|([{}\[\],.])|"((?:[^"\\]|\\.)*)"|([a-z][A-Za-z0-9_]*))')


def parse_erlang_terms(text: str) -> list:
    """The subset of Erlang terms acl.conf uses: tuples, lists, atoms, strings; each term ends in '.'."""
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"cannot parse acl.conf at {text[pos:pos + 20]!r}")
        pos = m.end()
        if m.group(1):
            continue
        if m.group(2):
            tokens.append(("p", m.group(2)))
        elif m.group(3) is not None:
            tokens.append(("s", re.sub(r"\\(.)", r"\1", m.group(3))))
        else:
            tokens.append(("a", m.group(4)))
    terms, i = [], 0

    def term(i: int):
        kind, val = tokens[i]
        if kind == "s":
            return val, i + 1
        if kind == "a":
            return Atom(val), i + 1
        if val in "{[":
            close = "}" if val == "{" else "]"
            items, i = [], i + 1
            while tokens[i] != ("p", close):
                item, i = term(i)
                items.append(item)
                if tokens[i] == ("p", ","):
                    i += 1
            return (tuple(items) if close == "}" else list(items)), i + 1
        raise ValueError(f"unexpected {val!r}")

    while i < len(tokens):
        t, i = term(i)
        if tokens[i] != ("p", "."):
            raise ValueError("a term must end with '.'")
        terms.append(t)
        i += 1
    return terms


@dataclass(frozen=True)
class Atom:
    name: str


class EmqxAcl:
    """EMQX file authorization: first matching rule decides; no match means deny (no_match = deny)."""

    def __init__(self, text: str) -> None:
        self.rules = parse_erlang_terms(text)

    @staticmethod
    def _who(who, user: str) -> bool:
        if who == Atom("all"):
            return True
        if isinstance(who, tuple) and who[0] in (Atom("username"), Atom("user")):
            return who[1] == user
        raise ValueError(f"unsupported who {who!r}")

    @staticmethod
    def _topic(rule_topic, user: str, topic: str) -> bool:
        if isinstance(rule_topic, tuple) and rule_topic[0] == Atom("eq"):
            return rule_topic[1] == topic
        return topic_matches(rule_topic.replace("${username}", user), topic)

    def allowed(self, user: str, topic: str, action: str) -> bool:
        for rule in self.rules:
            permission = rule[0].name
            if len(rule) == 2:  # {allow|deny, all}
                assert rule[1] == Atom("all")
                return permission == "allow"
            who, act, topics = rule[1], rule[2].name, rule[3]
            if self._who(who, user) and act in (action, "all") and any(
                    self._topic(t, user, topic) for t in topics):
                return permission == "allow"
        return False
