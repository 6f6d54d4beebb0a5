"""/api/v1 healthz, metrics (unauthenticated), openapi.json, and the audit log and its check (admin)."""
from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from services.common.config import Config
from services.common.logs import kv
from services.keyadmin import api_common as api
from services.keyadmin import clashes

log = logging.getLogger("medsec.keyadmin")
MAX_AUDIT_PAGE = 1000


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise api.ApiError(400, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise api.ApiError(400, f"{name} must be between {low} and {high}")
    return value


def create_blueprint(config: Config) -> Blueprint:
    bp = Blueprint("ops", __name__)

    @bp.get("/healthz")
    def healthz() -> Any:
        api.store().generation()  # the store answers
        return jsonify({"status": "ok"})

    @bp.get("/openapi.json")
    def openapi() -> Any:
        return jsonify(current_app.extensions["medsec.openapi"])

    @bp.get("/metrics")
    def metrics() -> Any:
        now = time.time()
        states: dict[str, int] = {"active": 0, "rotating": 0, "revoked": 0}
        for device in api.store().list():
            states[device.state(now)] = states.get(device.state(now), 0) + 1
        counts: dict[tuple[str, str, int], int] = current_app.extensions["medsec.request_counts"]
        lines = ["# HELP medsec_keyadmin_devices Registered devices by state.",
                 "# TYPE medsec_keyadmin_devices gauge"]
        lines += [f'medsec_keyadmin_devices{{state="{s}"}} {n}' for s, n in sorted(states.items())]
        # Rows found changed without the master key since start (keystore/integrity.py), any process
        # of this keyadmin; the devices among them also show as state="integrity_failed" above.
        lines += ["# HELP medsec_keyadmin_integrity_failures_total Key store rows that failed their MAC.",
                  "# TYPE medsec_keyadmin_integrity_failures_total counter",
                  f"medsec_keyadmin_integrity_failures_total {api.store().integrity_failures.count}"]
        lines += ["# HELP medsec_keyadmin_requests_total Key-admin API requests by endpoint and status.",
                  "# TYPE medsec_keyadmin_requests_total counter"]
        lines += [f'medsec_keyadmin_requests_total{{endpoint="{e}",method="{m}",status="{s}"}} {n}'
                  for (e, m, s), n in sorted(counts.items())]
        lines += clashes.metric_lines(api.store())
        return Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")

    @bp.get("/audit")
    def audit() -> Any:
        after = _int_arg("after", 0, 0, 2**62)
        limit = _int_arg("limit", MAX_AUDIT_PAGE, 1, MAX_AUDIT_PAGE)
        entries = api.store().audit(after=after, limit=limit)
        return jsonify({"entries": [e.to_json() for e in entries],
                        "next": entries[-1].seq if len(entries) == limit else None})

    @bp.get("/audit/verify")
    def audit_verify() -> Any:
        """The chain is keyed with a key derived from the master key: checked here, where the key is."""
        entries, broken = api.store().verify_audit()
        head = {"seq": entries[-1].seq, "hash": entries[-1].hash} if entries else None
        if broken is not None:
            log.error(kv(event="audit_chain_broken", seq=broken.entry.seq, actor=api.actor()))
        return jsonify({
            "intact": broken is None, "entries": len(entries), "head": head,
            "broken": None if broken is None else {
                "seq": broken.entry.seq, "action": broken.entry.action, "device": broken.entry.device,
                "reason": broken.reason}})

    return bp
