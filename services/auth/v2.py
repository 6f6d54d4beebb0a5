"""Protocol v2 in the auth service: find the device by key id, check the counter, verify, acknowledge.

Ops on the auth socket (docs/architecture.md):
  {"op": "v2", "conn", "src", "frame": base64 of one whole frame}   (AuthService also takes
     "frames": base64 of `count` whole frames of one connection, back to back, and "count",
     answered {"status": "answers", "answers": [...]})
     -> {"status": "ok", "device", "seq", "values", "redelivery": bool, "gen", "ack": base64}
            `ack`: the ack frame, sealed now; the proxy writes it only after the broker's PUBACK
        {"status": "duplicate", "device", "seq", "ack": base64}   acknowledged before: re-ack, no publish
        {"status": "rejected", "reason", "detail", "device"[, "refusal": base64]}
            `refusal` only for a verified reading refused for good (not_json, missing_field,
            not_numeric, out_of_range, ...): the authenticated refusal frame to write to the device
  {"op": "v2acked", "conn", "kid": hex, "seqs": [seq, ...]}   the proxy wrote those acks after
     the PUBACK of their bus message (or "seq": one seq)
     -> {"status": "ok", "device", "seqs"} (or "seq")
  {"op": "v2acked", "acks": [[conn, kid hex, [seq, ...]], ...]}   what the proxy sends: the acks
     it wrote in one loop turn, every connection's (AuthService marks each with `mark_acked`)
     -> {"status": "ok", "marked": n}
  {"op": "v2ack", "conn", "kid": hex, "seq"}   the same, for a proxy that asks auth to seal it then
     -> {"status": "ok", "device", "seq", "ack": base64}

Order of checks (docs/protocol-v2.md): framing, key id (one dict lookup),
counter (before any decryption), tag, reading. The device's replay window is
advanced only after the tag verifies, by a compare-and-set in the key store
(`advance_v2_window`) before the answer leaves, so neither an auth restart nor
another auth instance on the same store ever accepts a seq twice (an instance
whose cached window is stale loses, reloads the window and classifies the seq
again). Ack bits follow within a second.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from services.common import authwire, v2
from services.common.logs import kv
from services.common.readings import ReadingError, validate
from services.keystore.integrity import IntegrityFailed
from services.keystore.models import Credential, KeyStoreError

Answer = dict[str, Any]


class V2Rejected(Exception):
    def __init__(self, reason: str, detail: str, device: str | None = None,
                 refusal: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.device = device
        self.refusal = refusal  # base64 refusal frame: only for a verified frame refused for good


@dataclass
class Entry:
    device_id: str
    generation: int
    keys: v2.Keys
    expires_at: float | None
    revoked: bool


class V2Auth:
    def __init__(self, store: Any, log: logging.Logger, clock: Callable[[], float]) -> None:
        self._store = store
        self._log = log
        self._clock = clock
        self._by_kid: dict[bytes, Entry] = {}
        self._windows: dict[bytes, v2.ReplayWindow] = {}
        self._dirty: dict[bytes, str] = {}  # key id -> device id: acks not yet written
        # Inside batch(): key id -> (device id, the window text the batch wrote, the cached window
        # the batch's later frames advance in place).
        self._advanced: dict[bytes, tuple[str, str, v2.ReplayWindow]] | None = None

    @property
    def devices(self) -> int:
        return len(self._by_kid)

    def load(self, creds: list[Credential]) -> None:
        """(Re)build the key id index; derived keys are kept for credentials already known."""
        by_kid: dict[bytes, Entry] = {}
        for cred in creds:
            try:
                kid = bytes.fromhex(cred.secret["key_id"])
                master = bytes.fromhex(cred.secret["master_key"])
            except (KeyError, ValueError):
                self._log.error(kv(event="bad_v2_credential", device=cred.device_id,
                                   generation=cred.generation))
                continue
            old = self._by_kid.get(kid)
            same = old is not None and old.device_id == cred.device_id
            keys = old.keys if old is not None and same else v2.derive_keys(master, kid)
            by_kid[kid] = Entry(cred.device_id, cred.generation, keys, cred.expires_at, cred.revoked)
        self._by_kid = by_kid
        self._windows = {k: w for k, w in self._windows.items() if k in by_kid}

    # --- ops ---
    def answer(self, frame: v2.Frame) -> Answer:
        """The answer to one reading frame, read whole from a request (`request_frames`)."""
        entry = self._entry(frame.kid)
        window = self._window(frame.kid)
        verdict = window.classify(frame.seq)
        if verdict == "old_seq":
            raise _too_old(frame.seq, window, entry)
        try:
            plaintext = v2.open_data(entry.keys, frame)
        except v2.V2Error as exc:
            raise V2Rejected(exc.reason, exc.detail, entry.device_id) from None
        if verdict == "new":
            # the genuine device spent this seq, whatever the reading says
            verdict, window = self._accept(frame.kid, entry, window, frame.seq)
            if verdict == "old_seq":
                raise _too_old(frame.seq, window, entry)
        if verdict == "duplicate":
            return {"status": "duplicate", "device": entry.device_id, "seq": frame.seq,
                    "ack": _ack(entry, frame.seq)}
        try:
            values = v2.parse_reading(plaintext)
            validate(values)
        except (v2.V2Error, ReadingError) as exc:
            # Verified, so the genuine device sent it: tell it, authenticated, to stop sending it.
            refusal = authwire.b64_text(v2.seal_refusal(entry.keys, frame.seq, exc.reason))
            raise V2Rejected(exc.reason, exc.detail, entry.device_id, refusal) from None
        # The ack is sealed with the answer (issue 13: one auth round trip per reading, not two);
        # the proxy holds it until the broker's PUBACK and then reports it with v2acked.
        return {"status": "ok", "device": entry.device_id, "seq": frame.seq, "values": values,
                "redelivery": verdict == "redelivery", "gen": entry.generation, "ack": _ack(entry, frame.seq)}

    def ack(self, request: dict[str, Any]) -> Answer:
        seq = request.get("seq")
        entry = self.mark_acked(request.get("kid"), [seq])
        return {"status": "ok", "device": entry.device_id, "seq": seq, "ack": _ack(entry, seq)}

    def acked(self, request: dict[str, Any]) -> Answer:
        """One seq (`seq`), or the seqs of one key id whose acks the proxy wrote together (`seqs`)."""
        seqs = request.get("seqs")
        if seqs is None:
            seq = request.get("seq")
            entry = self.mark_acked(request.get("kid"), [seq])
            return {"status": "ok", "device": entry.device_id, "seq": seq}
        entry = self.mark_acked(request.get("kid"), seqs)
        return {"status": "ok", "device": entry.device_id, "seqs": seqs}

    def mark_acked(self, kid_text: Any, seqs: Any) -> Entry:
        """Mark `seqs` (1 to WINDOW counters) of key id `kid_text` acknowledged: the proxy wrote
        their acks after the broker's PUBACK. Each seq on its own: one never verified is refused
        (not_verified) once the others are marked."""
        if (not isinstance(kid_text, str) or not isinstance(seqs, list)
                or not 0 < len(seqs) <= v2.ReplayWindow.WINDOW or not all(map(_is_seq, seqs))):
            raise V2Rejected("bad_request", "v2ack/v2acked need kid (hex) and 1 to "
                             f"{v2.ReplayWindow.WINDOW} seqs (frames' counters)")
        try:
            kid = bytes.fromhex(kid_text)
        except ValueError:
            raise V2Rejected("bad_request", "kid is not hex") from None
        entry = self._entry(kid)
        window = self._window(kid)
        before = window.acked
        # An old_seq was acknowledged after the device's later readings moved the window past it
        # (they came on another connection while this one waited for its PUBACK): a copy of it
        # would be refused as old_seq anyway, so there is no bit left to record.
        never = window.ack_all(seqs)
        if window.acked != before:
            # Written within a second (flush), not before answering: an ack bit lost in a crash
            # only turns a later duplicate into a redelivery, which is published again and dropped
            # by the publisher. The counter itself (accept) is always written before the answer.
            self._dirty[kid] = entry.device_id
        if never:
            raise V2Rejected("not_verified", f"seq {never[0]} was never accepted: no ack", entry.device_id)
        return entry

    # --- internals ---
    def _entry(self, kid: bytes) -> Entry:
        entry = self._by_kid.get(kid)
        if entry is None:
            raise V2Rejected("unknown_kid", f"no v2 device has key id {kid.hex()}")
        if entry.revoked:
            raise V2Rejected("revoked", "the key of a revoked device", entry.device_id)
        if entry.expires_at is not None and entry.expires_at <= self._clock():
            raise V2Rejected("key_expired", "a key replaced by rotation whose grace period is over",
                             entry.device_id)
        return entry

    def _window(self, kid: bytes) -> v2.ReplayWindow:
        window = self._windows.get(kid)
        if window is None:
            if self._advanced is not None and kid in self._advanced:
                # Dropped from the cache inside the batch (a credentials reload): the batch's own
                # window is ahead of the store's until its end.
                window = self._advanced[kid][2]
            else:
                window = v2.ReplayWindow.from_text(self._stored_window(kid))
            self._windows[kid] = window
        return window

    def _stored_window(self, kid: bytes) -> str | None:
        """The stored window; a window changed without the master key is refused (fail closed)."""
        try:
            return self._store.v2_window(kid.hex())
        except IntegrityFailed as exc:
            raise V2Rejected("integrity_failed", str(exc), exc.device) from None

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Frames answered inside a batch of the store (AuthService.committed): a key's first new
        seq is a compare-and-set against the stored window, which the store then holds locked
        until the commit (keystore/sql.py advance_v2_window: one write for the run, at its end);
        its later ones only advance the cached window, and the last state is handed to the store
        at the end, before the commit (issue 13: a compare-and-set and two window texts per frame
        were 8 µs of a v2 frame's ~55 in auth, with ~13 frames of a device in a batch)."""
        self._advanced = {}
        try:
            yield
            for kid, (device_id, written, window) in self._advanced.items():
                text = window.to_text()
                if text == written:
                    continue
                if not self._store.advance_v2_window(kid.hex(), device_id, text, written):
                    # Cannot happen while the batch holds the row: fail the batch, write nothing.
                    raise KeyStoreError(f"the replay window of key id {kid.hex()} changed inside a batch")
                self._dirty.pop(kid, None)
        finally:
            self._advanced = None

    def _accept(self, kid: bytes, entry: Entry, window: v2.ReplayWindow,
                seq: int) -> tuple[v2.Verdict, v2.ReplayWindow]:
        """Accept a verified new seq with a compare-and-set in the store: (verdict, window).

        "new" when this instance won. Another auth instance on the same store may have accepted
        this seq (or another) since this instance's window was cached: then the stored window
        is loaded and the seq classified again (new, duplicate, redelivery or old_seq), never
        accepted twice. Inside batch(), a key already advanced in it is advanced in place: the
        batch holds its row, so no other instance can have accepted anything since."""
        advanced = self._advanced
        if advanced is not None and kid in advanced:
            if window is not advanced[kid][2]:  # cannot happen (_window): fail the batch, never guess
                raise KeyStoreError(f"two replay windows of key id {kid.hex()} inside a batch")
            window.accept(seq)
            return "new", window
        for _ in range(3):
            candidate = v2.ReplayWindow(window.last, window.verified, window.acked)
            candidate.accept(seq)
            text, base = candidate.to_text(), window.to_text()
            if self._store.advance_v2_window(kid.hex(), entry.device_id, text, base):
                self._windows[kid] = candidate
                self._dirty.pop(kid, None)
                if advanced is not None:
                    advanced[kid] = (entry.device_id, text, candidate)
                return "new", candidate
            window = self._reload(kid, entry.device_id, window)
            verdict = window.classify(seq)
            if verdict != "new":
                return verdict, window
        raise V2Rejected("busy", f"seq {seq}: the stored replay window keeps changing", entry.device_id)

    def _reload(self, kid: bytes, device_id: str, stale: v2.ReplayWindow) -> v2.ReplayWindow:
        """The stored window, with the ack bits this instance recorded and has not flushed yet."""
        fresh = v2.ReplayWindow.from_text(self._stored_window(kid))
        stored_acks = fresh.acked
        for i in range(v2.ReplayWindow.WINDOW):
            if stale.acked >> i & 1:
                fresh.ack(stale.last - i)  # no change for a seq the stored window never verified
        if fresh.acked != stored_acks:
            self._dirty[kid] = device_id  # written at the next flush
        self._windows[kid] = fresh
        return fresh

    def forget_windows(self) -> None:
        """Drop the cached windows (a batch of window writes failed to commit): each is loaded
        from the store again, and ack bits not yet written are lost (a later copy of such a
        reading is a redelivery, published again and dropped by the publisher)."""
        self._windows.clear()
        self._dirty.clear()

    def flush(self) -> None:
        """Write the windows whose ack bits changed since their last write (once a second)."""
        dirty, self._dirty = self._dirty, {}
        for kid, device_id in dirty.items():
            window = self._windows.get(kid)
            if window is None:
                continue
            try:
                if not self._store.save_v2_window(kid.hex(), device_id, window.to_text()):
                    self._reload(kid, device_id, window)  # another instance accepted more: merge, retry
            except Exception as exc:  # a busy store: try again at the next flush
                self._dirty[kid] = device_id
                self._log.warning(kv(event="v2_flush_failed", error=type(exc).__name__))


def request_frames(text: Any, count: int, name: str = "frames") -> list[v2.Frame]:
    """The `count` reading frames whose bytes, back to back, `text` is the base64 of (a request's
    "frame", or its "frames" and "count"), nothing more, nothing less; else V2Rejected: the
    frame's own reason, or bad_request."""
    data = _b64(text, name)
    frames: list[v2.Frame] = []
    offset = 0
    with memoryview(data) as view:
        while len(frames) < count:
            try:
                frame, used = v2.read(view[offset:])
            except v2.V2Error as exc:
                raise V2Rejected(exc.reason, exc.detail) from None
            if frame is None:
                break
            frames.append(frame)
            offset += used
    if len(frames) != count or offset != len(data):
        what = "one whole v2 frame" if count == 1 else f"{count} whole v2 frames, back to back"
        raise V2Rejected("bad_request", f"{name} must be exactly {what}")
    return frames


def _too_old(seq: int, window: v2.ReplayWindow, entry: Entry) -> V2Rejected:
    return V2Rejected("old_seq", f"seq {seq} is older than the replay window"
                      f" ({v2.ReplayWindow.WINDOW} seqs up to {window.last})", entry.device_id)


def _ack(entry: Entry, seq: int) -> str:
    return authwire.b64_text(v2.seal_ack(entry.keys, seq))


def _is_seq(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= v2.SEQ_MAX


def _b64(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise V2Rejected("bad_request", f"{name} must be base64 text")
    data = authwire.b64_bytes(value)
    if data is None:
        raise V2Rejected("bad_request", f"{name} is not base64")
    return data
