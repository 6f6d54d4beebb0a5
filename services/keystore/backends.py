"""open_store(config): the one place the key store backend is chosen.

MEDSEC_KEYSTORE_URL unset: the state dir's SQLite file; a postgresql:// URL:
PostgreSQL, whose module (and driver) is imported only then.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from services.common.config import Config
from services.keystore.models import KeyStoreError
from services.keystore.sqlite import SQLiteKeyStore
from services.keystore.store import KeyStore


def open_store(config: Config) -> KeyStore:
    """The configured key store: PostgreSQL for postgresql:// URLs, else the state dir's SQLite file."""
    url = config.keystore_url
    if not url:
        return SQLiteKeyStore.open(config)
    scheme = urlsplit(url).scheme
    if scheme not in ("postgresql", "postgres"):
        raise KeyStoreError(f"MEDSEC_KEYSTORE_URL must be a postgresql:// URL, got a {scheme!r} one")
    from services.keystore.postgres import PostgresKeyStore

    return PostgresKeyStore.open(config)
