"""Credentials v1 identification cannot tell apart, found in the store at keyadmin's start.

The store refuses new ones (same key and IV[:9] as any stored credential); a store
written before that check, or behind its back, may still hold some. Each group gets a
log line and the audit log one entry per start; the metric counts them on every scrape.
Auth refuses readings that decode under several of them (`ambiguous_key`).
"""
from __future__ import annotations

import logging

from services.common.logs import kv
from services.keystore.store import KeyStore

Group = list[tuple[str, int]]


def report(store: KeyStore, log: logging.Logger) -> list[Group]:
    """Log each clash group (device ids and generations, never key material); audit them once."""
    groups = store.credential_clashes()
    for group in groups:
        log.warning(kv(event="credential_clash", devices=",".join(sorted({d for d, _ in group})),
                       credentials=",".join(f"{d}:{g}" for d, g in group),
                       detail="same key and IV[:9]: rotate all but one of them"))
    if groups:
        store.append_audit("keyadmin", "credential_clash", None,
                           {"groups": [[f"{d}:{g}" for d, g in group] for group in groups]})
    return groups


def metric_lines(store: KeyStore) -> list[str]:
    return ["# HELP medsec_keyadmin_credential_clashes Groups of v1 credentials identification cannot"
            " tell apart (same key and IV[:9]).",
            "# TYPE medsec_keyadmin_credential_clashes gauge",
            f"medsec_keyadmin_credential_clashes {len(store.credential_clashes())}"]
