"""Which handler serves a connection, decided by its first byte.

v1 streams start with a hex digit; a v2 handler (services/proxy/v2.py) claims
its own first byte, which is not one. To add a protocol, write a class with
`name`, `claims(first_byte)` and `async run(conn, first)` and list it below.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from services.proxy.v1 import V1Handler
from services.proxy.v2 import V2Handler

if TYPE_CHECKING:
    from services.proxy.connection import Connection


class ProtocolHandler(Protocol):
    name: str

    def claims(self, first_byte: int) -> bool: ...

    async def run(self, conn: Connection, first: bytes) -> None:
        """Serve the connection; return on a clean end of stream, raise Reject to close it."""


HANDLERS: list[ProtocolHandler] = [V1Handler(), V2Handler()]


def select(first_byte: int) -> ProtocolHandler | None:
    return next((h for h in HANDLERS if h.claims(first_byte)), None)
