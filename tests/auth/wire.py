"""A blocking test client for the auth socket (the proxy's side of services/common/authwire.py)."""
from __future__ import annotations

import itertools
import socket
from pathlib import Path
from typing import Any

from Crypto.Cipher import AES

from services.common import authwire, v1


class AuthClient:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.buf = bytearray()
        self.ids = itertools.count(1)

    def send(self, message: dict[str, Any]) -> Any:
        message = {"id": next(self.ids), **message}
        self.sock.sendall(authwire.encode(message))
        return message["id"]

    def recv(self) -> dict[str, Any]:
        while (message := next(authwire.messages(self.buf), None)) is None:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("auth closed the socket")
            self.buf += chunk
        return message

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        rid = self.send(message)
        answer = self.recv()
        assert answer["id"] == rid
        return answer

    def reading(self, conn: int, wire: bytes | str, final: bool = False) -> dict[str, Any]:
        """Send one reading as the proxy does: the blocks of `wire` (hex joined by '+')."""
        if isinstance(wire, bytes):
            wire = wire.decode()
        return self.ask({"op": "v1", "conn": conn, "src": "127.0.0.1:5000",
                         "blocks": wire.replace("+", ""), "final": final})

    def close(self) -> None:
        self.sock.close()


def encrypt(key: str, iv: str, plaintext: bytes | str, variant: str = "chained") -> bytes:
    if isinstance(plaintext, str):
        plaintext = plaintext.encode()
    ecb = AES.new(key.encode(), AES.MODE_ECB)
    return v1.encrypt(ecb.encrypt, iv.encode(), plaintext, variant)  # type: ignore[arg-type]
