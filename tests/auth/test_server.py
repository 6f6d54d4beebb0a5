"""The transport alone: a failing service costs one answer, never the connection."""
from __future__ import annotations

import asyncio
import contextlib
import logging

from services.auth.server import AuthServer
from services.common import authwire


class Exploding:
    def identify_batch_steps(self, requests, client=None):
        yield None  # a step: the transport lets its other clients go
        yield [None] * len(requests)  # nothing identified ahead: every request takes handle()

    def handle(self, message, client=None, identified=None):
        if message.get("boom"):
            raise RuntimeError("bug")
        return {"id": message["id"], "status": "ok"}

    def refresh(self, force=False):
        pass

    @contextlib.contextmanager
    def one_look(self):
        yield

    @contextlib.contextmanager
    def committed(self):
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


class Stepping(Exploding):
    """A pass over the keys that takes steps until another client has been answered."""

    def __init__(self):
        self.other_answered = asyncio.Event()
        self.steps = 0

    def identify_batch_steps(self, requests, client=None):
        while (not any(r.get("other") for r in requests) and not self.other_answered.is_set()
               and self.steps < 10_000):
            self.steps += 1
            yield None
        yield [None] * len(requests)

    def handle(self, message, client=None, identified=None):
        if message.get("other"):
            self.other_answered.set()
        return {"id": message["id"], "status": "ok", "steps": self.steps}


def test_a_long_identification_pass_lets_other_clients_through(tmp_path):
    """Between two steps of one client's pass, another client is answered (a burst of new devices
    on one proxy does not hold everyone else for its whole pass)."""
    async def scenario():
        service = Stepping()
        server = AuthServer(service, tmp_path / "a.sock", logging.getLogger("test"))
        await server.start()
        burst_r, burst_w = await asyncio.open_unix_connection(str(tmp_path / "a.sock"))
        other_r, other_w = await asyncio.open_unix_connection(str(tmp_path / "a.sock"))
        burst_w.write(authwire.encode({"id": 1}))
        await burst_w.drain()
        while service.steps == 0:  # the burst's pass has begun
            await asyncio.sleep(0)
        other_w.write(authwire.encode({"id": 2, "other": True}))
        answers = {}
        for name, reader in (("other", other_r), ("burst", burst_r)):
            buf = bytearray()
            while not (got := list(authwire.messages(buf))):
                buf += await asyncio.wait_for(reader.read(65536), 5)
            answers[name] = got[0]
        for w in (burst_w, other_w):
            w.close()
        server.stop()
        await server.serve()
        return service, answers

    service, answers = asyncio.run(scenario())
    assert answers["other"]["status"] == "ok" and answers["burst"]["status"] == "ok"
    assert service.other_answered.is_set() and service.steps < 10_000  # the pass waited for it


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
    service.handle(dict(request, conn=10))
    service.handle(dict(request, conn=11))
    assert len(looks) == 3


def test_a_stretch_whose_commit_fails_answers_keystore_unavailable_and_writes_nothing(store, tmp_path):
    """The server answers a stretch of requests only after its window writes are committed: when the
    commit fails, every answer of the stretch is keystore_unavailable, and the frames sent again are
    accepted as new (nothing of them was written)."""
    import sqlite3

    from services.auth.service import AuthService
    from tests.auth.test_v2 import device, frame

    class FailingCommit:
        def __init__(self, real):
            self.real, self.fail = real, True

        def __getattr__(self, name):
            return getattr(self.real, name)

        @contextlib.contextmanager
        def batch(self):
            with self.real.batch():
                yield
                if self.fail:
                    raise sqlite3.OperationalError("disk I/O error")

    keys = device(store, "pico-commit")
    failing = FailingCommit(store)

    async def ask(requests):
        server = AuthServer(AuthService(failing), tmp_path / "a.sock", logging.getLogger("test"))
        await server.start()
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "a.sock"))
        answers, buf = [], bytearray()
        expected = 0
        for batch in requests:
            writer.write(b"".join(authwire.encode(r) for r in batch))
            expected += len(batch)
            while len(answers) < expected:
                buf += await asyncio.wait_for(reader.read(65536), 5)
                answers += authwire.messages(buf)
            failing.fail = False
        writer.close()
        server.stop()
        await server.serve()
        return answers

    v1_close = {"id": 99, "op": "close", "conn": 5}  # writes nothing: its answer stands
    answers = asyncio.run(ask([[frame(keys, 1), v1_close, frame(keys, 2)],
                               [frame(keys, 1), frame(keys, 2)]]))
    lost = ("rejected", "keystore_unavailable")
    assert [(a["id"], a["status"], a.get("reason")) for a in answers[:3]] == [
        (1, *lost), (99, "closed", None), (2, *lost)]
    assert [(a["status"], a["redelivery"]) for a in answers[3:]] == [("ok", False)] * 2


class Recording(Exploding):
    """Answers everything; records which requests each batch (one_look) and stretch (committed) held."""

    def __init__(self):
        self.batches: list[list[int]] = []
        self.stretches: list[list[int]] = []

    @contextlib.contextmanager
    def one_look(self):
        self.batches.append([])
        yield

    @contextlib.contextmanager
    def committed(self):
        self.stretches.append([])
        yield

    def handle(self, message, client=None, identified=None):
        self.batches[-1].append(message["id"])
        self.stretches[-1].append(message["id"])
        return {"id": message["id"], "status": "ok"}


def test_batches_and_stretches_are_counted_in_readings_not_requests(tmp_path):
    """A v2 request carries the frames of a connection's read (up to 64): a batch (answered
    together) and a stretch (one commit, then the loop turns) hold about BATCH and STRETCH
    readings, not as many requests, or one batch of such requests would keep every answer and
    every other client waiting for thousands of frames."""
    from services.auth.server import BATCH, STRETCH

    frames = STRETCH // 2
    requests = [{"id": n, "op": "v2", "frames": "x", "count": frames} for n in range(BATCH // frames + 1)]
    requests += [{"id": 100 + n, "op": "v1"} for n in range(3)]

    async def scenario():
        service = Recording()
        server = AuthServer(service, tmp_path / "a.sock", logging.getLogger("test"))
        await server.start()
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "a.sock"))
        writer.write(b"".join(authwire.encode(r) for r in requests))
        answers, buf = [], bytearray()
        while len(answers) < len(requests):
            buf += await asyncio.wait_for(reader.read(65536), 5)
            answers += authwire.messages(buf)
        writer.close()
        server.stop()
        await server.serve()
        return service, answers

    service, answers = asyncio.run(scenario())
    assert [a["id"] for a in answers] == [r["id"] for r in requests]
    per_batch = BATCH // frames
    assert [len(b) for b in service.batches] == [per_batch, len(requests) - per_batch]
    assert service.stretches == [[0, 1], [2, 3], [4, 100, 101, 102]]  # two requests reach STRETCH
