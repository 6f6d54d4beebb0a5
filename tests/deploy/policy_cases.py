"""The broker policy as a table of concrete cases, written from DESIGN.md (not from accounts.py).

(user, topic, action, allowed); action "publish" or "subscribe" (= receive).
"""
from __future__ import annotations

P, S = "publish", "subscribe"

CASES: list[tuple[str, str, str, bool]] = [
    # Nobody but the publisher may write Pico/#; dashboard reads it.
    ("publisher", "Pico/pico-1/json", P, True),
    ("publisher", "Pico/pico-1/status", P, True),
    ("dashboard", "Pico/pico-1/json", S, True),
    ("dashboard", "Pico/pico-1/json", P, False),
    ("proxy", "Pico/pico-1/json", P, False),
    ("keyadmin", "Pico/pico-1/json", P, False),
    ("dispatch", "Pico/pico-1/json", P, False),
    ("monitor", "Pico/pico-1/json", P, False),
    ("station-a", "Pico/pico-1/json", P, False),
    # history reads the published readings (Pico/<id>/json) and nothing else; it writes nothing.
    ("history", "Pico/pico-1/json", S, True),
    ("history", "Pico/pico-1/json", P, False),
    ("history", "Pico/pico-1/status", S, False),
    ("history", "Pico/pico-1/Physiological_Data/Temperature", S, False),
    ("history", "medsec/ingest/pico-1", S, False),
    ("history", "medsec/events/pico-1", S, False),
    ("history", "medsec/keys/events", S, False),
    ("history", "medsec/audit/head", S, False),
    ("history", "medsec/dispatch/station-a/params", S, False),
    ("history", "other/topic", P, False),
    # Nobody but the proxy may write medsec/ingest/#; the publisher and monitor read it.
    ("proxy", "medsec/ingest/pico-1", P, True),
    ("publisher", "medsec/ingest/pico-1", S, True),
    ("monitor", "medsec/ingest/pico-1", S, True),
    ("publisher", "medsec/ingest/pico-1", P, False),
    ("dashboard", "medsec/ingest/pico-1", P, False),
    ("dashboard", "medsec/ingest/pico-1", S, False),
    ("keyadmin", "medsec/ingest/pico-1", P, False),
    ("dispatch", "medsec/ingest/pico-1", P, False),
    ("monitor", "medsec/ingest/pico-1", P, False),
    ("station-a", "medsec/ingest/pico-1", P, False),
    ("proxy", "medsec/ingest/pico-1", S, False),
    # Events: proxy and publisher write; the dashboard never sees the internal bus.
    ("proxy", "medsec/events/pico-1", P, True),
    ("publisher", "medsec/events/pico-1", P, True),
    ("dashboard", "medsec/events/pico-1", S, False),
    ("keyadmin", "medsec/events/pico-1", P, False),
    # Key events: keyadmin writes, proxy and dispatch follow.
    ("keyadmin", "medsec/keys/events", P, True),
    ("proxy", "medsec/keys/events", S, True),
    ("dispatch", "medsec/keys/events", S, True),
    ("proxy", "medsec/keys/events", P, False),
    ("dashboard", "medsec/keys/events", S, False),
    ("station-a", "medsec/keys/events", S, False),
    # The audit witness: keyadmin keeps it (and reads it back), monitor reads it, nobody else.
    ("keyadmin", "medsec/audit/head", P, True),
    ("keyadmin", "medsec/audit/head", S, True),
    ("monitor", "medsec/audit/head", S, True),
    ("proxy", "medsec/audit/head", P, False),
    ("dispatch", "medsec/audit/head", P, False),
    ("dashboard", "medsec/audit/head", S, False),
    ("station-a", "medsec/audit/head", P, False),
    # Mosquitto's account commands: only brokeradmin (checked on the rendered files; the real-broker
    # table skips $ topics, which the witness account cannot write).
    ("brokeradmin", "$CONTROL/dynamic-security/v1", P, True),
    ("dispatch", "$CONTROL/dynamic-security/v1", P, False),
    ("monitor", "$CONTROL/dynamic-security/v1", S, False),
    ("brokeradmin", "medsec/dispatch/station-a/params", S, False),
    # Dispatch and its stations: each station only its own subtree.
    ("dispatch", "medsec/dispatch/station-a/params", P, True),
    ("dispatch", "medsec/dispatch/station-a/request", S, True),
    ("station-a", "medsec/dispatch/station-a/params", S, True),
    ("station-a", "medsec/dispatch/station-a/verdict", S, True),
    ("station-a", "medsec/dispatch/station-a/go", S, True),
    ("station-a", "medsec/dispatch/station-a/request", P, True),
    ("station-a", "medsec/dispatch/station-a/result", P, True),
    ("station-a", "medsec/dispatch/station-a/params", P, False),
    ("station-a", "medsec/dispatch/station-b/params", S, False),
    ("station-a", "medsec/dispatch/station-b/request", P, False),
    ("station-b", "medsec/dispatch/station-a/params", S, False),
    ("dashboard", "medsec/dispatch/station-a/params", S, False),
    # Anything else: denied.
    ("publisher", "other/topic", P, False),
    ("monitor", "other/topic", S, False),
    ("dashboard", "other/topic", S, False),
    ("proxy", "$SYS/broker/uptime", S, False),
]

# For the cross-product equivalence check (every user x topic x action).
USERS = sorted({c[0] for c in CASES} | {"unknown-user"})
TOPICS = sorted({c[1] for c in CASES} | {"medsec/dispatch/unknown-user/params", "medsec/x", "Pico"})
