"""`python -m tests.deploy.run_auth`: the real auth service, on the store MEDSEC_KEYSTORE_URL names.

services/auth/server.py opens `SQLiteKeyStore.open(config)`; until it calls
`services.auth.keystore_pg.open_store(config)` itself (a one-line change asked of
the auth service), this runs the unchanged server with that one call redirected.
"""
from __future__ import annotations

import sys

from services.auth import server
from services.auth.keystore_pg import open_store


class _Configured:
    open = staticmethod(open_store)


if __name__ == "__main__":
    server.SQLiteKeyStore = _Configured  # type: ignore[assignment, misc]
    sys.exit(server.main())
