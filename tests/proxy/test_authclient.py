"""The auth client's own behaviour against a scripted Unix-socket peer speaking services.common.authwire:
answers matched by id, a lost peer fails requests in flight, a new peer is picked up by itself."""
from __future__ import annotations

import asyncio

import pytest

from services.common import authwire
from services.proxy.authclient import AuthClient
from services.proxy.errors import AuthUnavailable


class Peer:
    """Answers requests in reverse order of arrival per batch (the client must match by id)."""

    def __init__(self, path, batch: int = 1, silent: bool = False) -> None:
        self.path, self.batch, self.silent = path, batch, silent
        self.server: asyncio.AbstractServer | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        buf, held = bytearray(), []
        while data := await reader.read(65536):
            buf += data
            for msg in authwire.messages(buf):
                held.append(msg)
                if len(held) >= self.batch and not self.silent:
                    for m in reversed(held):
                        writer.write(authwire.encode({"id": m["id"], "status": "ok", "echo": m.get("n")}))
                    held.clear()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        self.path.unlink(missing_ok=True)


def test_pipelined_answers_are_matched_by_id(tmp_path):
    async def main():
        peer = Peer(tmp_path / "a.sock", batch=5)
        await peer.start()
        client = AuthClient(tmp_path / "a.sock")
        answers = await asyncio.gather(*(client.request({"op": "v1", "n": n}) for n in range(5)))
        await client.close()
        await peer.stop()
        return answers

    answers = asyncio.run(main())
    assert [a["echo"] for a in answers] == [0, 1, 2, 3, 4]


def test_a_lost_peer_fails_requests_in_flight_and_a_new_one_is_used(tmp_path):
    async def main():
        path = tmp_path / "b.sock"
        peer = Peer(path, silent=True)
        await peer.start()
        client = AuthClient(path, timeout=5, wait=0.3)
        pending = asyncio.ensure_future(client.request({"op": "v1", "n": 1}))
        await asyncio.sleep(0.05)
        await peer.stop()  # auth goes away with a request in flight
        with pytest.raises(AuthUnavailable) as lost:
            await pending
        with pytest.raises(AuthUnavailable) as down:
            await client.request({"op": "v1", "n": 2})  # nobody listening
        peer = Peer(path)
        await peer.start()
        answer = await client.request({"op": "v1", "n": 3})
        await client.close()
        await peer.stop()
        return lost.value, down.value, answer

    lost, down, answer = asyncio.run(main())
    assert lost.reason == "auth_unavailable" and "auth" in lost.detail
    assert down.reason == "auth_unavailable" and "cannot reach auth" in down.detail
    assert answer["echo"] == 3


def test_a_silent_peer_times_out(tmp_path):
    async def main():
        peer = Peer(tmp_path / "c.sock", silent=True)
        await peer.start()
        client = AuthClient(tmp_path / "c.sock", timeout=0.2)
        try:
            with pytest.raises(AuthUnavailable) as info:
                await client.request({"op": "v1"})
        finally:
            await client.close()
            await peer.stop()
        return info.value

    assert "no answer from auth within 0.2 s" in asyncio.run(main()).detail


def test_a_restarting_peer_is_waited_for(tmp_path):
    async def main():
        path = tmp_path / "d.sock"
        client = AuthClient(path, wait=5)
        waiting = asyncio.ensure_future(client.request({"op": "v1", "n": 7}))
        await asyncio.sleep(0.3)  # nobody listens yet: the client keeps trying
        assert not waiting.done()
        peer = Peer(path)
        await peer.start()
        answer = await waiting
        await client.close()
        await peer.stop()
        return answer

    assert asyncio.run(main())["echo"] == 7
