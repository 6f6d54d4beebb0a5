// The public topic tree of medsec (docs: DESIGN.md "Topics"). Pure functions, no I/O.
"use strict";

// The gateway's rule (services/common/config.py): no leading or trailing dot, so never `.` or `..`.
const DEVICE_ID_RE = /^(?!\.)[A-Za-z0-9_.-]{1,64}(?<!\.)$/;

function validDeviceId(id) {
    return typeof id === "string" && DEVICE_ID_RE.test(id);
}

// Filter for one kind of message ("json", "status" or "alert") of one device, or of all ("" or undefined).
function filterFor(kind, device) {
    return `Pico/${device ? device : "+"}/${kind}`;
}

// "Pico/<id>/<kind>" -> {device, kind}; null for anything else.
function parseTopic(topic) {
    const parts = typeof topic === "string" ? topic.split("/") : [];
    if (parts.length !== 3 || parts[0] !== "Pico" || !validDeviceId(parts[1])) {
        return null;
    }
    return { device: parts[1], kind: parts[2] };
}

// MQTT filter matching (+ and # wildcards), as the broker does it.
function topicMatches(filter, topic) {
    const f = filter.split("/");
    const t = topic.split("/");
    for (let i = 0; i < f.length; i++) {
        if (f[i] === "#") {
            return true;
        }
        if (i >= t.length || (f[i] !== "+" && f[i] !== t[i])) {
            return false;
        }
    }
    return f.length === t.length;
}

// A reading from Pico/<id>/json: numbers stay numbers; anything malformed throws with a reason.
function parseReading(device, payload) {
    let reading;
    try {
        reading = JSON.parse(payload.toString("utf8"));
    } catch (err) {
        throw new Error(`not JSON from ${device}`);
    }
    if (reading === null || typeof reading !== "object" || Array.isArray(reading)) {
        throw new Error(`reading from ${device} is not an object`);
    }
    if (reading.device !== undefined && reading.device !== device) {
        throw new Error(`reading on the topic of ${device} names device ${String(reading.device).slice(0, 64)}`);
    }
    return reading;
}

module.exports = { validDeviceId, filterFor, parseTopic, topicMatches, parseReading };
