"""What the server and its connections share: open connections, devices, counters, policies."""
from __future__ import annotations

import itertools
import secrets
import time
from typing import TYPE_CHECKING

from services.common.config import Config
from services.proxy.authclient import AuthClient
from services.proxy.metrics import Metrics
from services.proxy.output import Output
from services.proxy.probation import Probation
from services.proxy.ratelimit import DeviceRateLimit
from services.proxy.replay import ReplayMemory
from services.proxy.reporter import Reporter
from services.proxy.throttle import Throttle

if TYPE_CHECKING:
    from services.proxy.connection import Connection

# A device revoked this recently is refused even if an auth answer raced the revocation.
REVOKED_MEMORY = 10.0


class ProxyState:
    def __init__(self, config: Config, auth: AuthClient, output: Output, metrics: Metrics,
                 throttle: Throttle, instance: str) -> None:
        self.config = config
        self.auth = auth
        self.output = output
        self.metrics = metrics
        self.throttle = throttle
        self.instance = instance
        self.connections: dict[int, Connection] = {}
        # Connections of each device that delivered a new reading: its online status.
        self.devices: dict[str, set[Connection]] = {}
        # Every connection whose readings decode under a device's key, new or replayed:
        # two at once is a duplicate session (duplicate_open: devices with one reported).
        self.sessions: dict[str, set[Connection]] = {}
        self.duplicate_open: set[str] = set()
        self.revoked: dict[str, float] = {}
        self.rate = DeviceRateLimit(config.device_max_rate, config.device_burst)
        self.replays = ReplayMemory(config.replay_window)
        self.probation = Probation(config.throttle_grace, config.throttle_queue)
        self.reporter = Reporter()
        # Connection ids are unique across proxy instances sharing one auth: a random base.
        self._conn_ids = itertools.count(secrets.randbits(40) << 12)
        self._uids = itertools.count(1)

    def next_conn_id(self) -> int:
        return next(self._conn_ids)

    def next_uid(self) -> str:
        return f"{self.instance}:{next(self._uids)}"

    def recently_revoked(self, device: str) -> bool:
        when = self.revoked.get(device)
        return when is not None and time.monotonic() - when < REVOKED_MEMORY

    def add_device(self, device: str, conn: Connection) -> int:
        conns = self.devices.setdefault(device, set())
        conns.add(conn)
        return len(conns)

    def remove_device(self, device: str, conn: Connection) -> int:
        """Forget the connection; returns how many connections the device still has here."""
        return _remove(self.devices, device, conn)

    def bind(self, device: str, conn: Connection) -> list[Connection]:
        """The connection speaks for `device`; returns the device's other live connections."""
        conns = self.sessions.setdefault(device, set())
        others = [c for c in conns if c is not conn]
        conns.add(conn)
        return others

    def unbind(self, device: str, conn: Connection) -> int:
        return _remove(self.sessions, device, conn)


def _remove(table: dict[str, set[Connection]], device: str, conn: Connection) -> int:
    conns = table.get(device)
    if conns is None:
        return 0
    conns.discard(conn)
    if not conns:
        del table[device]
        return 0
    return len(conns)
