"""/api/v1/devices/<id>/readings and /fhir: a device's history by time range (scope read).

The history store is opened read-only through services/history/store.py (the only code that
opens it), on first use: the history service creates it, possibly after keyadmin started
(until then every range is empty); a PostgreSQL store that does not answer is a 503.
Pages: at most `limit` items, and `next`, an opaque cursor to pass back as `cursor` (null on
the last page); CSV answers carry it in the X-Next-Cursor header.
"""
from __future__ import annotations

import csv
import io
import math
import threading
import time
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, jsonify, request

from services.common.config import Config, valid_device_id
from services.common.v1 import FIELDS
from services.history import fhir
from services.history.store import (
    HistoryStore,
    HistoryStoreError,
    HistoryUnavailable,
    cursor_of,
    open_history,
)
from services.keyadmin import api_common as api

DEFAULT_SPAN = 3600.0  # no `from`: the last hour
MAX_PAGE = 10000
DEFAULT_PAGE = 1000
FHIR_DEFAULT_PAGE = 500  # readings (two Observations each)
FHIR_MAX_PAGE = 2000
STEPS = ("raw", "1m")
FORMATS = ("json", "csv")
RAW_COLUMNS = ["ts", "seq", "protocol", *FIELDS]
MINUTE_COLUMNS = ["ts", "n", *FIELDS, *(f"{f}_min" for f in FIELDS), *(f"{f}_max" for f in FIELDS)]
_lock = threading.Lock()


class _NoHistoryYet:
    """Before the history service first created its store there is nothing to show: empty pages."""

    def readings(self, *args: Any, **kw: Any) -> list[Any]:
        return []

    def minutes(self, *args: Any, **kw: Any) -> list[Any]:
        return []


def _history() -> HistoryStore:
    """The app's read-only history store, opened once it exists (empty answers until then)."""
    ext = current_app.extensions
    with _lock:
        store = ext.get("medsec.history")
        if store is None:
            try:
                store = open_history(api.config(), readonly=True)
            except HistoryUnavailable:
                return _NoHistoryYet()  # type: ignore[return-value]
            except HistoryStoreError as exc:
                raise api.ApiError(503, f"history store unavailable: {exc}") from None
            ext["medsec.history"] = store
        return store


def _number(name: str, default: float) -> float:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise api.ApiError(400, f"{name} must be a number of unix seconds") from None
    if not math.isfinite(value) or not 0 <= value <= 1e11:
        raise api.ApiError(400, f"{name} must be unix seconds between 0 and 1e11")
    return value


def _int(name: str, default: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= high:
        raise api.ApiError(400, f"{name} must be an integer between 1 and {high}")
    return int(raw)


def _choice(name: str, options: tuple[str, ...]) -> str:
    value = request.args.get(name, options[0])
    if value not in options:
        raise api.ApiError(400, f"{name} must be one of {', '.join(options)}")
    return value


def _range(device_id: str) -> tuple[float, float]:
    if not valid_device_id(device_id):
        raise api.ApiError(400, "invalid device id")
    end = _number("to", time.time())
    start = _number("from", max(0.0, end - DEFAULT_SPAN))
    if start > end:
        raise api.ApiError(400, "from must not be after to")
    return start, end


def _raw_cursor(text: str | None) -> tuple[float, int] | None:
    """`r<ts>_<seq>` (seq -1 for none) -> (ts, seq); anything else is a 400."""
    if text is None:
        return None
    try:
        ts_text, seq_text = text[1:].split("_")
        ts, seq = float(ts_text), int(seq_text)
        if text[0] != "r" or not math.isfinite(ts) or not -1 <= seq < 2**63:
            raise ValueError
    except ValueError:
        raise api.ApiError(400, "cursor is not one this API gave") from None
    return ts, seq


def _minute_cursor(text: str | None) -> int | None:
    if text is None:
        return None
    if text[:1] != "m" or not text[1:].isdigit() or len(text) > 16:
        raise api.ApiError(400, "cursor is not one this API gave")
    return int(text[1:])


def _page_raw(store: HistoryStore, device: str, start: float, end: float, limit: int,
              cursor: str | None) -> tuple[list[Any], str | None]:
    rows = store.readings(device, start, end, limit, _raw_cursor(cursor))
    nxt = None
    if len(rows) == limit:
        ts, seq = cursor_of(rows[-1])
        nxt = f"r{ts!r}_{seq}"
    return rows, nxt


def _next_url(nxt: str | None) -> str | None:
    if nxt is None:
        return None
    args = {k: v for k, v in request.args.items() if k != "cursor"}
    return f"{request.base_url}?{urlencode({**args, 'cursor': nxt})}"


def create_blueprint(config: Config) -> Blueprint:
    bp = Blueprint("history", __name__)

    @bp.get("/devices/<device_id>/readings")
    def readings(device_id: str) -> Any:
        start, end = _range(device_id)
        step, fmt = _choice("step", STEPS), _choice("format", FORMATS)
        limit = _int("limit", DEFAULT_PAGE, MAX_PAGE)
        cursor = request.args.get("cursor")
        store = _history()
        try:
            if step == "raw":
                rows, nxt = _page_raw(store, device_id, start, end, limit, cursor)
                items = [r.as_dict() for r in rows]
            else:
                minutes = store.minutes(device_id, math.floor(start / 60) * 60, end, limit,
                                        _minute_cursor(cursor))
                nxt = f"m{minutes[-1].minute}" if len(minutes) == limit else None
                items = [m.as_dict() for m in minutes]
        except HistoryStoreError as exc:
            raise api.ApiError(503, f"history store unavailable: {exc}") from None
        if fmt == "csv":
            out = io.StringIO()
            columns = RAW_COLUMNS if step == "raw" else MINUTE_COLUMNS
            writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in item.items()} for item in items)
            response = Response(out.getvalue(), mimetype="text/csv")
            response.headers["Content-Disposition"] = f'attachment; filename="{device_id}-{step}.csv"'
            if nxt:
                response.headers["X-Next-Cursor"] = nxt
            return response
        return jsonify({"device": device_id, "from": start, "to": end, "step": step,
                        "items": items, "next": nxt})

    @bp.get("/devices/<device_id>/fhir")
    def fhir_export(device_id: str) -> Any:
        start, end = _range(device_id)
        limit = _int("limit", FHIR_DEFAULT_PAGE, FHIR_MAX_PAGE)
        try:
            rows, nxt = _page_raw(_history(), device_id, start, end, limit, request.args.get("cursor"))
        except HistoryStoreError as exc:
            raise api.ApiError(503, f"history store unavailable: {exc}") from None
        doc = fhir.bundle(device_id, rows, request.url, _next_url(nxt), time.time())
        return Response(current_app.json.dumps(doc), mimetype="application/fhir+json")

    return bp
