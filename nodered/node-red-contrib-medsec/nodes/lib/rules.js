// The alert rules as a pure state machine: readings, status changes and clock ticks in,
// alert / clear events out. One "alert" when an episode starts, one "clear" when it ends.
"use strict";

const RULES = ["temp_high", "temp_low", "pulse_flat", "silent", "offline", "protocol_v1", "duplicate_session"];
// Alerts the gateway raises itself (Pico/<id>/alert, published from proxy events), by rule.
const GATEWAY_RULES = new Set(["duplicate_session"]);

function num(value) {
    if (value === undefined || value === null || value === "") {
        return null;
    }
    const n = Number(value);
    return Number.isFinite(n) ? n : null;
}

// Normalise the node's settings; throws on nonsense so the node can say what is wrong.
function parseRules(config) {
    const rules = {
        tempHigh: num(config.tempHigh),
        tempLow: num(config.tempLow),
        hysteresis: num(config.hysteresis) || 0,
        flatSeconds: num(config.flatSeconds),
        flatDelta: num(config.flatDelta) === null ? 0.05 : num(config.flatDelta),
        silentSeconds: num(config.silentSeconds),
        offline: config.offline === true || config.offline === "true",
        requireV2: config.requireV2 === true || config.requireV2 === "true",
        // On unless switched off: a device on two connections at once may be a replay or a clone.
        sessions: !(config.sessions === false || config.sessions === "false"),
    };
    for (const key of ["flatSeconds", "silentSeconds"]) {
        if (rules[key] !== null && rules[key] <= 0) {
            throw new Error(`${key} must be a positive number of seconds`);
        }
    }
    if (rules.hysteresis < 0 || rules.flatDelta < 0) {
        throw new Error("hysteresis and flatDelta must not be negative");
    }
    if (rules.tempHigh !== null && rules.tempLow !== null && rules.tempLow >= rules.tempHigh) {
        throw new Error("tempLow must be below tempHigh");
    }
    return rules;
}

class AlertEngine {
    constructor(rules) {
        this.rules = rules;
        this.devices = new Map(); // id -> {lastReading, online, samples, active: Map(rule -> event)}
    }

    device(id) {
        let d = this.devices.get(id);
        if (!d) {
            d = { lastReading: null, online: null, samples: [], active: new Map() };
            this.devices.set(id, d);
        }
        return d;
    }

    // Open or close the episode of (device, rule); returns the event or null when nothing changed.
    set(id, rule, on, now, details) {
        const d = this.device(id);
        const open = d.active.get(rule);
        if (on && !open) {
            const event = { device: id, rule, state: "alert", since: now, ts: now, ...details };
            d.active.set(rule, event);
            return event;
        }
        if (!on && open) {
            d.active.delete(rule);
            return { device: id, rule, state: "clear", since: open.since, ts: now, duration: now - open.since, ...details };
        }
        return null;
    }

    reading(id, reading, now) {
        const r = this.rules;
        const d = this.device(id);
        const events = [];
        const push = (e) => e && events.push(e);
        d.lastReading = now;
        push(this.set(id, "silent", false, now, { text: `${id} is sending again` }));
        const temp = num(reading.Temp);
        if (temp !== null) {
            if (r.tempHigh !== null) {
                const open = d.active.has("temp_high");
                const on = open ? temp > r.tempHigh - r.hysteresis : temp > r.tempHigh;
                push(this.set(id, "temp_high", on, now, {
                    value: temp, threshold: r.tempHigh,
                    text: on ? `${id} temperature ${temp} above ${r.tempHigh}` : `${id} temperature back to ${temp}`,
                }));
            }
            if (r.tempLow !== null) {
                const open = d.active.has("temp_low");
                const on = open ? temp < r.tempLow + r.hysteresis : temp < r.tempLow;
                push(this.set(id, "temp_low", on, now, {
                    value: temp, threshold: r.tempLow,
                    text: on ? `${id} temperature ${temp} below ${r.tempLow}` : `${id} temperature back to ${temp}`,
                }));
            }
        }
        const pulse = num(reading.PulseSig);
        if (r.flatSeconds !== null && pulse !== null) {
            d.samples.push({ t: now, v: pulse });
            // Keep the newest sample at or before the window start: it proves the window is covered.
            while (d.samples.length > 1 && d.samples[1].t <= now - r.flatSeconds) {
                d.samples.shift();
            }
            const covered = d.samples[0].t <= now - r.flatSeconds;
            const values = d.samples.map((s) => s.v);
            const range = Math.max(...values) - Math.min(...values);
            if (range >= r.flatDelta) {
                push(this.set(id, "pulse_flat", false, now, { value: range, text: `${id} pulse signal is moving again` }));
            } else if (covered) {
                push(this.set(id, "pulse_flat", true, now, {
                    value: range, threshold: r.flatDelta,
                    text: `${id} pulse signal flat for ${r.flatSeconds} s`,
                }));
            }
        }
        if (r.requireV2 && (reading.protocol === "v1" || reading.protocol === "v2")) {
            const on = reading.protocol === "v1";
            push(this.set(id, "protocol_v1", on, now, {
                value: reading.protocol,
                text: on ? `${id} speaks legacy v1 in a v2 fleet` : `${id} now speaks v2`,
            }));
        }
        return events;
    }

    // An alert the gateway raised (Pico/<id>/alert): {rule, state: "alert"|"clear", text, src, peer}.
    gateway(id, alert, now) {
        if (!this.rules.sessions || !alert || !GATEWAY_RULES.has(alert.rule)
            || (alert.state !== "alert" && alert.state !== "clear")) {
            return [];
        }
        const on = alert.state === "alert";
        const text = typeof alert.text === "string" && alert.text ? alert.text.slice(0, 200)
            : `${id} ${on ? "is on two connections at once" : "is down to one connection"}`;
        const details = { text, reason: typeof alert.reason === "string" ? alert.reason : null };
        for (const key of ["src", "peer"]) {
            const a = alert[key];
            details[key] = Array.isArray(a) && a.length === 2 && typeof a[0] === "string" ? [a[0], a[1]] : null;
        }
        const e = this.set(id, alert.rule, on, now, details);
        return e ? [e] : [];
    }

    status(id, status, now) {
        const d = this.device(id);
        const online = status === "online";
        const events = [];
        if (online && d.online !== true && d.lastReading === null) {
            d.lastReading = now; // the silence clock starts when a device comes online
        }
        d.online = online;
        if (this.rules.offline) {
            const e = this.set(id, "offline", !online, now, { text: online ? `${id} is online` : `${id} is offline` });
            if (e) {
                events.push(e);
            }
        }
        return events;
    }

    tick(now) {
        const events = [];
        if (this.rules.silentSeconds === null) {
            return events;
        }
        for (const [id, d] of this.devices) {
            if (d.lastReading !== null && d.online !== false && now - d.lastReading >= this.rules.silentSeconds) {
                const e = this.set(id, "silent", true, now, {
                    value: now - d.lastReading, threshold: this.rules.silentSeconds,
                    text: `${id} sent nothing for ${this.rules.silentSeconds} s`,
                });
                if (e) {
                    events.push(e);
                }
            }
        }
        return events;
    }

    active() {
        const all = [];
        for (const d of this.devices.values()) {
            all.push(...d.active.values());
        }
        return all;
    }
}

module.exports = { RULES, parseRules, AlertEngine };
