"""The auth logic: identify a v1 connection's device, decrypt and validate its readings.

No I/O of its own beyond the key store it is given: the transport
(services/auth/server.py) decodes requests, calls `handle`, encodes answers.
Sessions are keyed by (client, conn): each proxy numbers its own connections.
Identification by block 0 is identify.py's; protocol v2 is v2.py's.

v1 identification never picks among credentials: block 0 is tried under every
one, and when several match, the connection's first reading decides. It must
decode validly under exactly one of them (several: `ambiguous_key`, nothing
published). Every block auth is asked about must read as text under a
credential and variant still in question (v1text.py), else `not_printable` at
once.
"""
from __future__ import annotations

import binascii
import contextlib
import gc
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from services.auth.bursts import BurstDetector, source_address
from services.auth.identify import Candidate, Identified, V1Keys
from services.auth.v1text import Reading, readable
from services.auth.v2 import V2Auth, V2Rejected, request_frames
from services.common import v1
from services.common.logs import kv
from services.common.readings import ReadingError, validate
from services.common.v2 import Frame
from services.keystore.models import Seen
from services.keystore.store import KeyStore

Answer = dict[str, Any]
# Reasons that mean "this source does not hold a valid key" (counted per address for the audit log).
IDENTIFICATION_FAILURES = frozenset({"unknown_key", "unknown_kid", "revoked", "key_expired"})
# Credentials loaded at once from which the keys are frozen for the garbage collector (gc.freeze).
FREEZE_FROM = 1000
# Credentials remembered per source address (tried first on that address's next connections), and
# addresses remembered at most (then forgotten all at once).
HINTS = 8
MAX_HINTED_ADDRESSES = 100_000


@dataclass
class Session:
    device_id: str | None  # None until the first reading decides among several credentials
    generation: int
    contenders: list[Candidate] = field(default_factory=list)  # while undecided: block 0 matched these
    variant: v1.Variant | None = None
    readings: int = 0


@dataclass
class Metrics:
    requests: int = 0
    accepted: int = 0
    more: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    identified: int = 0
    identify_seconds: float = 0.0
    identify_max: float = 0.0
    hinted: int = 0  # identified by the credentials last seen from the same address, without a pass
    reloads: int = 0
    candidates: int = 0
    sessions: int = 0
    clashes: int = 0

    def prometheus(self) -> str:
        lines = [
            "# TYPE medsec_auth_requests_total counter",
            f"medsec_auth_requests_total {self.requests}",
            "# TYPE medsec_auth_readings_accepted_total counter",
            f"medsec_auth_readings_accepted_total {self.accepted}",
            "# TYPE medsec_auth_readings_rejected_total counter",
        ]
        lines += [f'medsec_auth_readings_rejected_total{{reason="{r}"}} {n}'
                  for r, n in sorted(self.rejected.items())]
        lines += [
            "# TYPE medsec_auth_identify_seconds summary",
            f"medsec_auth_identify_seconds_sum {self.identify_seconds:.6f}",
            f"medsec_auth_identify_seconds_count {self.identified}",
            "# TYPE medsec_auth_identify_seconds_max gauge",
            f"medsec_auth_identify_seconds_max {self.identify_max:.6f}",
            "# TYPE medsec_auth_identify_hinted_total counter",
            f"medsec_auth_identify_hinted_total {self.hinted}",
            "# TYPE medsec_auth_keystore_reloads_total counter",
            f"medsec_auth_keystore_reloads_total {self.reloads}",
            "# TYPE medsec_auth_v1_candidates gauge",
            f"medsec_auth_v1_candidates {self.candidates}",
            "# TYPE medsec_auth_sessions gauge",
            f"medsec_auth_sessions {self.sessions}",
            "# TYPE medsec_auth_v1_credential_clashes gauge",
            f"medsec_auth_v1_credential_clashes {self.clashes}",
        ]
        return "\n".join(lines) + "\n"


# Frames of one v2 request at most: the proxy asks at most PIPELINE (16) of a connection at once.
MAX_FRAMES = 64


def weight(message: dict[str, Any]) -> int:
    """The readings a request asks about (a stretch of answers is counted in readings)."""
    return frame_count(message) or 1


def frame_count(message: dict[str, Any]) -> int | None:
    """A v2 request's `count` of frames, or None when it has no valid one (1 to MAX_FRAMES)."""
    count = message.get("count")
    return count if type(count) is int and 0 < count <= MAX_FRAMES else None


class Rejected(Exception):
    def __init__(self, reason: str, detail: str, device: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.device = device


class AuthService:
    def __init__(self, store: KeyStore, log: logging.Logger | None = None,
                 clock: Callable[[], float] = time.time, bursts: BurstDetector | None = None,
                 max_blocks: int = 64) -> None:
        self._store = store
        self._log = log or logging.getLogger("medsec.auth")
        self._clock = clock
        self._store_generation: int | None = None
        self._looked = False  # inside one_look(): the store was checked for this batch already
        self._changes: int | None = None
        self._keys = V1Keys()
        self._sessions: dict[tuple[Any, int], Session] = {}
        # v1 connections refused until the proxy closes them: the readings it pipelined behind the
        # refused one are answered `closed`, never identified again from scratch.
        self._refused: set[tuple[Any, int]] = set()
        self._recent: dict[str, deque[Candidate]] = {}  # source address -> credentials identified there
        self._seen: dict[str, Seen] = {}
        self.metrics = Metrics()
        self._bursts = bursts or BurstDetector()
        self._max_blocks = max_blocks
        self._v2 = V2Auth(store, self._log, clock)

    # --- key cache ---
    def refresh(self, force: bool = False) -> None:
        """Reload credentials when another process changed the store (one PRAGMA when it did not).

        Only the devices changed since the last look are reloaded when the store can say which;
        force reloads everything.
        """
        if self._looked and not force:
            return
        generation = self._store.generation()
        if not force and generation == self._store_generation:
            return
        self._store_generation = generation
        self._reload(full=force)

    @contextlib.contextmanager
    def committed(self) -> Iterator[None]:
        """Answers computed inside may leave only after it closed: the key store's writes of the
        v2 frames answered inside are committed together at its end (store.batch). If that
        fails it raises, and the replay windows cached here are forgotten (they may be ahead of
        the store): they are loaded again at their next frame."""
        try:
            with self._store.batch(), self._v2.batch():
                yield
        except BaseException:
            self._v2.forget_windows()
            raise

    @contextlib.contextmanager
    def one_look(self) -> Iterator[None]:
        """Requests answered together (one read of the socket) see the store as of their start:
        one look at the store per batch, not per request (issue 13). If it fails, each request
        looks again and answers for itself."""
        try:
            self.refresh()
            self._looked = True
        except Exception:  # answered per request below (keystore_unavailable, ...)
            self._looked = False
        try:
            yield
        finally:
            self._looked = False

    def _reload(self, full: bool) -> None:
        since = -1 if full or self._changes is None else self._changes
        creds, current = self._store.credentials_changed("v1", since)
        v2_changed = since == -1 or bool(self._store.credentials_changed("v2", since)[0])
        self._keys.load(creds, since == -1, self._clock())
        if len(creds) >= FREEZE_FROM:
            # Many new keys: what is alive now, the keys among it, leaves the garbage collector's
            # sight (with 10,000 keys a full collection took ~40 ms, in the middle of whatever
            # request triggered it). Keys hold no reference cycles: reference counting still frees
            # those a later reload replaces.
            gc.freeze()
        self._changes = current
        if v2_changed:
            self._v2.load(self._store.credentials("v2"))
        self.metrics.reloads += 1
        self.metrics.candidates = len(self._keys.active)
        if since == -1:
            self._report_clashes()

    def _report_clashes(self) -> None:
        """At start (every full load): credentials the first block cannot tell apart, one line per
        group. Identification still refuses to pick among them (ambiguous_key); the store refuses
        new ones, so these predate that check or were written behind the store's back."""
        clashes = self._keys.clashes()
        self.metrics.clashes = len(clashes)
        for group in clashes:
            members = ",".join(f"{d}:{g}" for d, g in sorted((c.device_id, c.generation) for c in group))
            devices = ",".join(sorted({c.device_id for c in group}))
            self._log.warning(kv(event="credential_clash", devices=devices, credentials=members,
                                 detail="same key and IV[:9]: rotate all but one of them"))

    # --- requests ---
    def identify_many(self, block0s: list[bytes]) -> list[list[Candidate]]:
        """What `identify.match` finds among all keys for each block, in one pass over the keys."""
        return self._keys.identify_many(block0s)

    def identify_batch(self, requests: list[dict[str, Any]], client: Any = None) -> list[Identified | None]:
        """Identify together the first readings of new connections among `requests` (answered next,
        in order, by `handle(request, client, identified)`). Other requests get None: today's path."""
        *_, result = self.identify_batch_steps(requests, client)
        assert result is not None
        return result

    def identify_batch_steps(self, requests: list[dict[str, Any]],
                             client: Any = None) -> Iterator[list[Identified | None] | None]:
        """`identify_batch` in steps (identify.V1Keys.identify_batch_steps): None after each step but
        the last, then the result. The transport serves its other clients in between."""
        self.refresh()
        result: list[Identified | None] = [None] * len(requests)
        seen_conns: set[Any] = set()
        todo: list[tuple[int, bytes]] = []
        for i, request in enumerate(requests):
            conn = request.get("conn")
            if not _hashable(conn):
                continue
            first = conn not in seen_conns  # an earlier request of this batch may open or close it
            seen_conns.add(conn)
            if (not first or request.get("op") != "v1" or not isinstance(conn, int) or isinstance(conn, bool)
                    or (client, conn) in self._sessions or (client, conn) in self._refused):
                continue
            try:
                blocks = _blocks(request.get("blocks"))
            except Rejected:
                continue
            if len(blocks) <= self._max_blocks:
                todo.append((i, blocks[0]))
        scan = []
        for i, block0 in todo:
            hinted = self._keys.hinted(block0, self._hints(requests[i]))
            if hinted is None:
                scan.append((i, block0))
            else:
                self.metrics.hinted += 1
                result[i] = Identified(self._keys.every, hinted, 0.0, 0.0)
        todo = scan
        if len(todo) < 2:
            yield result  # nothing to share: the usual path
            return
        for identified in self._keys.identify_batch_steps([b for _, b in todo]):
            if identified is None:
                yield None
                continue
            for (i, _), one in zip(todo, identified, strict=True):
                result[i] = one
        yield result

    def handle(self, request: dict[str, Any], client: Any = None,
               identified: Identified | None = None) -> Answer:
        self.metrics.requests += 1
        rid = request.get("id")
        op = request.get("op")
        conn = request.get("conn")
        if op == "close":
            self.close(client, conn)
            return {"id": rid, "status": "closed"}
        if op == "v2acked" and "acks" in request:
            return self._v2_acks(rid, client, request)
        if op == "v2" and "frames" in request:
            return self._v2_frames(rid, client, conn, request)
        if op in ("v2", "v2ack", "v2acked"):
            return self._v2_op(rid, client, conn, request)
        if op != "v1":
            exc = Rejected("bad_request", f"unknown op {str(op)[:20]!r}")
            return self._reject(rid, client, conn, request, exc)
        if _hashable(conn) and (client, conn) in self._refused:
            return {"id": rid, "status": "rejected", "reason": "closed",
                    "detail": "an earlier reading of this connection was refused", "device": None}
        try:
            self.refresh()
            return self._v1(rid, client, conn, request, identified)
        except Rejected as exc:
            return self._reject(rid, client, conn, request, exc)

    def _v2_op(self, rid: Any, client: Any, conn: Any, request: dict[str, Any]) -> Answer:
        """Protocol v2 (services/auth/v2.py): frames are self-identifying, so no session is kept."""
        return {"id": rid, **self._v2_answer(client, conn, request)}

    def _v2_answer(self, client: Any, conn: Any, request: dict[str, Any]) -> Answer:
        """`_v2_op`'s answer without the request's id."""
        op = request.get("op")
        try:
            self.refresh()
            if op != "v2":
                return self._v2.ack(request) if op == "v2ack" else self._v2.acked(request)
            frame = request_frames(request.get("frame"), 1, "frame")[0]
        except V2Rejected as exc:
            return self._v2_refused(client, conn, request, exc)
        return self._v2_frame(client, conn, request, frame)

    def _v2_frame(self, client: Any, conn: Any, request: dict[str, Any], frame: Frame) -> Answer:
        """One v2 frame's answer (of `request`'s, which a refusal logs), the store looked at already."""
        try:
            answer = self._v2.answer(frame)
        except V2Rejected as exc:
            return self._v2_refused(client, conn, request, exc)
        self._count_v2(answer)
        return answer

    def _count_v2(self, answer: Answer) -> None:
        if answer["status"] == "ok":
            seen = self._seen_for(answer["device"])
            seen.readings += 1
            seen.last_seen = self._clock()
            self.metrics.accepted += 1

    def _v2_refused(self, client: Any, conn: Any, request: dict[str, Any], exc: V2Rejected) -> Answer:
        answer = self._reject(None, client, conn, request, Rejected(exc.reason, exc.detail, exc.device))
        del answer["id"]
        if exc.refusal is not None:
            answer["refusal"] = exc.refusal  # a verified reading refused for good: the device's answer
        return answer

    def _v2_frames(self, rid: Any, client: Any, conn: Any, request: dict[str, Any]) -> Answer:
        """v2 with `frames` and `count`: the base64 of the whole frames of one read of a
        connection, back to back (1 to MAX_FRAMES), each answered as a request of its own would
        be, in order, in `answers` (issue 13: a device streaming flat out has about 13 frames in
        a read, and a message each was a JSON message to write and to read, a future and a
        dispatch per reading in both processes; one base64 text, not one per frame, ~0.6 µs a
        frame less in the two). Frames that do not split as `count` whole ones refuse it whole."""
        count = frame_count(request)
        if count is None:
            exc = Rejected("bad_request", f"count must be 1 to {MAX_FRAMES}: the frames in `frames`")
            return self._reject(rid, client, conn, request, exc)
        try:
            frames = request_frames(request.get("frames"), count)
        except V2Rejected as exc:
            return self._reject(rid, client, conn, request, Rejected(exc.reason, exc.detail))
        self.refresh()
        as_one = {"op": "v2", "conn": conn, "src": request.get("src")}  # what a refusal logs
        answers = [self._v2_frame(client, conn, as_one, frame) for frame in frames]
        return {"id": rid, "status": "answers", "answers": answers}

    def _v2_acks(self, rid: Any, client: Any, request: dict[str, Any]) -> Answer:
        """v2acked with `acks`, [[conn, kid, seqs], ...]: the acks the proxy wrote in one loop turn,
        all its connections' in one notification (issue 13: one per connection and bus message was
        a JSON message to write and to read per reading or two). Each entry is marked on its own;
        one refused is logged as a v2acked of its own would be."""
        acks = request.get("acks")
        if not isinstance(acks, list) or not acks:
            return self._reject(rid, client, None, request,
                                Rejected("bad_request", "acks must be a list of [conn, kid, seqs]"))
        self.refresh()
        marked = 0
        for item in acks:
            conn, kid, seqs = item if isinstance(item, list) and len(item) == 3 else (None, None, None)
            try:
                self._v2.mark_acked(kid, seqs)
                marked += 1
            except V2Rejected as exc:
                self._reject(rid, client, conn, request, Rejected(exc.reason, exc.detail, exc.device))
        return {"id": rid, "status": "ok", "marked": marked}

    def close(self, client: Any, conn: Any) -> None:
        if not _hashable(conn):
            return
        self._sessions.pop((client, conn), None)
        self._refused.discard((client, conn))
        self.metrics.sessions = len(self._sessions)

    def drop_client(self, client: Any) -> None:
        """A proxy went away: forget all its connections."""
        for key in [k for k in self._sessions if k[0] == client]:
            del self._sessions[key]
        self._refused = {k for k in self._refused if k[0] != client}
        self.metrics.sessions = len(self._sessions)

    def _v1(self, rid: Any, client: Any, conn: Any, request: dict[str, Any],
            identified: Identified | None = None) -> Answer:
        if not isinstance(conn, int) or isinstance(conn, bool):
            raise Rejected("bad_request", "conn must be an integer")
        blocks = _blocks(request.get("blocks"))
        if len(blocks) > self._max_blocks:  # the proxy checks too; auth does not rely on it
            raise Rejected("too_long", f"reading longer than {self._max_blocks} blocks")
        final = request.get("final") is True
        now = self._clock()
        session = self._sessions.get((client, conn))
        if session is None:
            matches = self._identify(blocks[0], now, identified, request)
            session = Session(None, 0, matches)
            self._sessions[(client, conn)] = session
            self.metrics.sessions = len(self._sessions)
            if len(matches) == 1:
                self._decided(session, matches[0], conn, request)
            else:
                self._log.info(kv(event="identify_contest", conn=conn, src=request.get("src", ""),
                                  devices=",".join(f"{c.device_id}:{c.generation}" for c in matches)))
        if session.device_id is None:
            contenders = session.contenders
        else:
            cand = self._keys.by_cred.get((session.device_id, session.generation))
            if cand is None or cand.revoked:
                raise Rejected("revoked", "the device was revoked", session.device_id)
            if not cand.valid(now):
                raise Rejected("key_expired", "the rotation grace period of this key is over",
                               session.device_id)
            contenders = [cand]
        one = contenders[0].device_id if len(contenders) == 1 else None
        readings, failed_at = readable(contenders, blocks, session.variant)
        if not readings:
            raise Rejected("not_printable", f"block {failed_at} decrypts to bytes no v1 reading holds", one)
        if session.device_id is None:
            session.contenders = list({id(r.cand): r.cand for r in readings}.values())
        # `open`: a '+' follows these blocks (the proxy asks so that garbage is refused at once).
        if request.get("open") is True or (not final and not any(r.padded for r in readings)):
            self.metrics.more += 1
            return {"id": rid, "status": "more"}
        reading, values = self._decode(readings, one)
        cand = reading.cand
        if session.device_id is None:
            if not cand.valid(now):
                raise _stale(cand)
            self._decided(session, cand, conn, request)
        session.variant = reading.variant
        session.readings += 1
        if cand.overlapping:
            # First use of the new credentials ends the overlap of the old ones at once.
            self._store.confirm(cand.device_id, cand.generation)
            cand.overlapping = False
            self._log.info(kv(event="rotation_confirmed", device=cand.device_id, generation=cand.generation))
            self._reload(full=False)  # our own write: data_version does not move for this connection
        seen = self._seen_for(cand.device_id)
        seen.readings += 1
        seen.last_seen = now
        self.metrics.accepted += 1
        return {"id": rid, "status": "ok", "device": cand.device_id, "values": values,
                "variant": reading.variant, "gen": cand.generation}

    @staticmethod
    def _decode(readings: list[Reading], device: str | None) -> tuple[Reading, dict[str, str]]:
        """The one (credential, variant) the whole reading decodes validly under.

        Several credentials: `ambiguous_key` (never a pick: one of them is someone else's key, and
        its values would be published under the wrong id, altered). None: the first one's reason."""
        valid: list[tuple[Reading, dict[str, str]]] = []
        error: Rejected | None = None
        for reading in readings:
            if any(r.cand is reading.cand for r, _ in valid):
                continue  # one variant per credential is enough
            try:
                values = v1.parse_plaintext(v1.strip_padding(reading.plain))
                validate(values)
            except (v1.V1Error, ReadingError) as exc:
                error = error or Rejected(exc.reason, exc.detail, device)
                continue
            valid.append((reading, values))
        if len(valid) > 1:
            names = ", ".join(f"{r.cand.device_id} (generation {r.cand.generation})" for r, _ in valid)
            raise Rejected("ambiguous_key", f"the reading decodes validly under the credentials of {names}")
        if not valid:
            assert error is not None
            raise error
        return valid[0]

    def _hints(self, request: dict[str, Any] | None) -> list[Candidate]:
        """The credentials last identified from the request's address (tried first: a device that
        reconnects from where it was is identified without a pass over every key)."""
        if request is None:
            return []
        return list(self._recent.get(source_address(request.get("src", "")), ()))

    def _decided(self, session: Session, cand: Candidate, conn: Any, request: dict[str, Any]) -> None:
        session.device_id, session.generation, session.contenders = cand.device_id, cand.generation, []
        if len(self._recent) >= MAX_HINTED_ADDRESSES:
            self._recent.clear()  # bounded; only identified connections add to it
        recent = self._recent.setdefault(source_address(request.get("src", "")), deque(maxlen=HINTS))
        if cand in recent:
            recent.remove(cand)
        recent.appendleft(cand)
        self._seen_for(cand.device_id).connections += 1
        self._log.info(kv(event="identified", device=cand.device_id, conn=conn,
                          src=request.get("src", ""), generation=cand.generation))

    def _identify(self, block0: bytes, now: float, pre: Identified | None = None,
                  request: dict[str, Any] | None = None) -> list[Candidate]:
        """Every credential block 0 matches; refused here when none of them is valid now."""
        started = time.perf_counter()
        hinted = None if pre is not None else self._keys.hinted(block0, self._hints(request))
        if hinted is not None:
            self.metrics.hinted += 1
            matches = hinted
            elapsed = longest = time.perf_counter() - started
        else:
            matches, elapsed, longest = self._keys.identify(block0, pre)
        self.metrics.identify_seconds += elapsed
        self.metrics.identify_max = max(self.metrics.identify_max, longest)
        self.metrics.identified += 1
        if any(c.valid(now) for c in matches):
            return matches
        if matches:
            # A known but revoked or expired key: say which (operators need it), revoked first.
            raise _stale(next((c for c in matches if c.revoked), matches[0]))
        raise Rejected("unknown_key", "no registered v1 key decrypts the first block")

    def _reject(self, rid: Any, client: Any, conn: Any, request: dict[str, Any], exc: Rejected) -> Answer:
        self.metrics.rejected[exc.reason] = self.metrics.rejected.get(exc.reason, 0) + 1
        if exc.device is not None and exc.reason not in ("revoked", "key_expired"):
            self._seen_for(exc.device).rejected += 1
        if _hashable(conn):
            self._sessions.pop((client, conn), None)
            if request.get("op") == "v1":
                self._refused.add((client, conn))
        self.metrics.sessions = len(self._sessions)
        self._log.warning(kv(event="rejected", reason=exc.reason, device=exc.device or "-", conn=conn,
                             src=str(request.get("src", ""))[:64], detail=exc.detail[:200]))
        if exc.reason in IDENTIFICATION_FAILURES:
            self._identification_failed(request, exc.reason)
        return {"id": rid, "status": "rejected", "reason": exc.reason, "detail": exc.detail,
                "device": exc.device}

    def _identification_failed(self, request: dict[str, Any], reason: str) -> None:
        burst = self._bursts.failure(source_address(request.get("src", "")), reason, self._clock())
        if burst is None:
            return
        self._log.warning(kv(event="identification_burst", src=burst["src"], failures=burst["failures"],
                             window=burst["window"]))
        try:
            self._store.append_audit("auth", "identification_failures", None, burst)
        except Exception as exc:  # the audit entry is best effort; the proxy throttles regardless
            self._log.warning(kv(event="audit_failed", error=type(exc).__name__))

    def _seen_for(self, device_id: str) -> Seen:
        seen = self._seen.get(device_id)
        if seen is None:
            seen = self._seen[device_id] = Seen()
        return seen

    def flush(self, limit: int | None = None) -> bool:
        """Write the v2 windows' new ack bits, then the accumulated last_seen and counters of at
        most `limit` devices (all by default); True when devices are left for another call. The
        server calls it once a second, SEEN_CHUNK devices a call, serving its clients in between:
        after a burst of 1,000 new connections one write of them all held its loop for 20 ms."""
        self._v2.flush()
        if not self._seen:
            return False
        if limit is None or len(self._seen) <= limit:
            batch, self._seen = self._seen, {}
        else:
            batch = {device_id: self._seen.pop(device_id) for device_id in list(self._seen)[:limit]}
        try:
            self._store.record_seen(batch)
        except Exception as exc:  # a busy store must not lose the counters
            for device_id, seen in batch.items():
                self._seen_for(device_id).merge(seen)
            self._log.warning(kv(event="flush_failed", error=type(exc).__name__))
            return False
        return bool(self._seen)


def _hashable(conn: Any) -> bool:
    try:
        hash(conn)
    except TypeError:
        return False
    return True


def _blocks(hex_text: Any) -> tuple[bytes, ...]:
    if not isinstance(hex_text, str) or not hex_text:
        raise Rejected("bad_request", "blocks must be a non-empty hex string")
    try:
        raw = binascii.unhexlify(hex_text)
    except (binascii.Error, ValueError):
        raise Rejected("bad_request", "blocks is not hex") from None
    if len(raw) % v1.BLOCK:
        raise Rejected("bad_request", "blocks is not a whole number of 16-byte blocks")
    return tuple(raw[i:i + v1.BLOCK] for i in range(0, len(raw), v1.BLOCK))


def _stale(cand: Candidate) -> Rejected:
    if cand.revoked:
        return Rejected("revoked", "the key of a revoked device", cand.device_id)
    return Rejected("key_expired", "a key replaced by rotation whose grace period is over", cand.device_id)
