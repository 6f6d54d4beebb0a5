// The history query behind the medsec history node. Pure: msg + node settings in, a query out.
"use strict";

const { validDeviceId } = require("./topics");

const STEPS = ["raw", "1m"];
const SPANS = { "1h": 3600, "24h": 86400, "7d": 7 * 86400 };
const PAGE = 10000; // the API's largest page

function seconds(value, name) {
    const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
    if (typeof n !== "number" || !Number.isFinite(n) || n < 0) {
        throw new Error(`${name} must be unix seconds (a number >= 0)`);
    }
    return n;
}

// {device, from, to, step} from msg.payload (a device id, or {device, from, to, span, step}),
// msg.device, and the node's defaults; throws a clear error for bad input. `now` in unix s.
function query(msg, defaults, now) {
    const p = msg.payload && typeof msg.payload === "object" ? msg.payload : {};
    const device = typeof msg.payload === "string" && msg.payload ? msg.payload : p.device || msg.device || defaults.device;
    if (!validDeviceId(device)) {
        throw new Error("history needs a device id (1-64 of A-Z a-z 0-9 _ . -) in msg.payload, msg.payload.device or the node");
    }
    const step = p.step || msg.step || defaults.step || "raw";
    if (!STEPS.includes(step)) {
        throw new Error(`step must be one of ${STEPS.join(", ")}`);
    }
    const spanIn = p.span !== undefined ? p.span : defaults.span;
    const span = SPANS[spanIn] !== undefined ? SPANS[spanIn] : seconds(spanIn === undefined || spanIn === "" ? 3600 : spanIn, "span");
    const to = p.to !== undefined ? seconds(p.to, "to") : now;
    const from = p.from !== undefined ? seconds(p.from, "from") : Math.max(0, to - span);
    if (from > to) {
        throw new Error("from must not be after to");
    }
    return { device, from, to, step };
}

// The API path of one page of a query.
function path(q, cursor) {
    const params = new URLSearchParams({ from: String(q.from), to: String(q.to), step: q.step, limit: String(PAGE) });
    if (cursor) {
        params.set("cursor", cursor);
    }
    return `/devices/${encodeURIComponent(q.device)}/readings?${params}`;
}

module.exports = { query, path, STEPS, SPANS };
