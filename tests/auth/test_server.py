"""The transport alone: a failing service costs one answer, never the connection."""
from __future__ import annotations

import asyncio
import contextlib
import logging

from services.auth.server import AuthServer
from services.common import authwire


class Exploding:
    def identify_batch(self, requests, client=None):
        return [None] * len(requests)  # nothing identified ahead: every request takes handle()

    def handle(self, message, client=None, identified=None):
        if message.get("boom"):
            raise RuntimeError("bug")
        return {"id": message["id"], "status": "ok"}

    def refresh(self, force=False):
        pass

    @contextlib.contextmanager
    def one_look(self):
        yield

    def drop_client(self, client):
        pass

    def flush(self):
        pass

    class metrics:  # noqa: N801 - stands in for the Metrics instance
        candidates = 0

        @staticmethod
        def prometheus():
            return ""


def test_internal_error_is_answered_in_order(tmp_path):
    async def scenario():
        server = AuthServer(Exploding(), tmp_path / "a.sock", logging.getLogger("test"))
        await server.start()
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "a.sock"))
        writer.write(authwire.encode({"id": 1}) + authwire.encode({"id": 2, "boom": True})
                     + authwire.encode({"id": 3}))
        answers, buf = [], bytearray()
        while len(answers) < 3:
            buf += await asyncio.wait_for(reader.read(65536), 5)
            answers += authwire.messages(buf)
        writer.close()
        server.stop()
        await server.serve()
        return answers

    answers = asyncio.run(scenario())
    assert [a["id"] for a in answers] == [1, 2, 3]
    assert answers[1]["reason"] == "internal_error" and answers[2]["status"] == "ok"
    assert not (tmp_path / "a.sock").exists()


def test_service_refuses_overlong_readings_itself(store):
    from services.auth.service import AuthService

    service = AuthService(store, max_blocks=4)
    answer = service.handle({"id": 1, "op": "v1", "conn": 1, "blocks": "00" * 16 * 5, "final": True})
    assert (answer["status"], answer["reason"]) == ("rejected", "too_long")


def test_one_look_at_the_store_per_batch_and_one_per_request_outside(store):
    """Issue 13: the server answers a batch inside one_look(): one PRAGMA for all its requests."""
    from services.auth.service import AuthService

    service = AuthService(store)
    looks = []
    real = store.generation
    store.generation = lambda: looks.append(1) or real()
    request = {"id": 1, "op": "v1", "conn": 1, "blocks": "00" * 16, "final": True}
    with service.one_look():
        answers = [service.handle(dict(request, id=n, conn=n)) for n in range(5)]
    assert len(looks) == 1 and all(a["status"] == "rejected" for a in answers)
    service.handle(request)
    service.handle(request)
    assert len(looks) == 3
