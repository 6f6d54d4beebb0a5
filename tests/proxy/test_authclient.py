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
        self.notifications: list[dict] = []  # messages without an id: never answered

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        buf, held = bytearray(), []
        while data := await reader.read(65536):
            buf += data
            for msg in authwire.messages(buf):
                if "id" not in msg:
                    self.notifications.append(msg)
                    continue
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


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_the_acks_of_a_loop_turn_go_to_auth_in_one_notification(tmp_path):
    """Issue 13: a bus message's PUBACK completes the acks of many connections in one loop turn;
    auth hears of them all in one v2acked (`acks`), at most ACKS_PER_MESSAGE entries a message, in
    the order they were written. Before the first connection there is nobody to tell."""
    from services.proxy.authclient import ACKS_PER_MESSAGE

    async def main():
        peer = Peer(tmp_path / "n.sock")
        await peer.start()
        client = AuthClient(tmp_path / "n.sock")
        client.acked(1, "aa", [1])  # not connected yet: dropped (auth loads the window afresh)
        await client.request({"op": "v1", "n": 0})
        client.acked(1, "aa", [2, 3])
        client.acked(2, "bb", [7])
        await _until(lambda: len(peer.notifications) == 1)
        first = list(peer.notifications)
        many = ACKS_PER_MESSAGE + 3
        for conn in range(many):
            client.acked(conn, "cc", [conn + 1])
        await _until(lambda: len(peer.notifications) == 3)
        await client.close()
        await peer.stop()
        return first, peer.notifications[1:], many

    first, split, many = asyncio.run(main())
    assert first == [{"op": "v2acked", "acks": [[1, "aa", [2, 3]], [2, "bb", [7]]]}]
    assert [len(m["acks"]) for m in split] == [ACKS_PER_MESSAGE, 3]
    assert [entry[0] for m in split for entry in m["acks"]] == list(range(many))


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


def test_each_request_times_out_at_its_own_deadline(tmp_path):
    """One timer watches every request in flight: a request fails when its own deadline passes,
    never at an earlier request's, and an answer inside the deadline is taken."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = bytearray()
        while data := await reader.read(65536):
            buf += data
            for msg in authwire.messages(buf):
                if msg["n"] % 2:  # odd ones are answered 0.3 s late, even ones never
                    asyncio.get_running_loop().call_later(0.3, writer.write, authwire.encode(
                        {"id": msg["id"], "status": "ok", "echo": msg["n"]}))

    async def timed(client: AuthClient, n: int) -> tuple[int, float, object]:
        loop = asyncio.get_running_loop()
        asked = loop.time()
        try:
            outcome: object = (await client.request({"op": "v1", "n": n}))["echo"]
        except AuthUnavailable as exc:
            outcome = exc.detail
        return n, loop.time() - asked, outcome

    async def main():
        path = tmp_path / "e.sock"
        server = await asyncio.start_unix_server(serve, path=str(path))
        client = AuthClient(path, timeout=1.0)
        first = asyncio.ensure_future(timed(client, 0))
        await asyncio.sleep(0.1)
        second = asyncio.ensure_future(timed(client, 1))
        await asyncio.sleep(0.1)
        third = asyncio.ensure_future(timed(client, 2))
        results = await asyncio.gather(first, second, third)
        await client.close()
        server.close()
        return results

    (_, waited0, lost0), (_, waited1, echo1), (_, waited2, lost2) = asyncio.run(main())
    assert echo1 == 1 and 0.25 <= waited1 < 1.0  # answered inside its deadline
    for waited, lost in ((waited0, lost0), (waited2, lost2)):  # each at its own deadline, not before
        assert "no answer from auth within 1 s" in lost and 0.95 <= waited < 3.0


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
