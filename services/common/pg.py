"""PostgreSQL helpers shared by the stores that keep their data there (key store, history).

Each store opens and owns its own database connection; this holds only what they
say about one the same way.
"""
from __future__ import annotations

from urllib.parse import urlsplit


def describe_url(url: str) -> str:
    """host:port/dbname of a URL, for logs and errors: never the password."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"
