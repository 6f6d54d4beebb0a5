"""PostgreSQL helpers shared by the stores that keep their data there (key store, history).

Each store opens and owns its own database connection; this holds only what they
say about one the same way.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import psycopg

# A server that vanishes without closing the connection (its container or machine gone) must
# fail a query within seconds, not after TCP's retransmissions (~15 min) with the caller blocked:
# keepalive probes on an idle connection, and a limit on unacknowledged data (ms).
LINK_OPTIONS = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 2,
                "tcp_user_timeout": 10000}


def connect(url: str, connect_timeout: int, **options: Any) -> psycopg.Connection:
    """A connection to `url` with LINK_OPTIONS; psycopg.Error as psycopg raises it (the caller words it).
    psycopg is imported here: a stack on SQLite never loads it."""
    import psycopg

    return psycopg.connect(url, connect_timeout=connect_timeout, **LINK_OPTIONS, **options)


def describe_url(url: str) -> str:
    """host:port/dbname of a URL, for logs and errors: never the password."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"
