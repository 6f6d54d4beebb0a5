"use strict";

// The alert rules as a pure state machine, with explicit clock values.
const assert = require("assert");
const { parseRules, AlertEngine } = require("../nodes/lib/rules");

function engine(config) {
    return new AlertEngine(parseRules(config));
}
const states = (events) => events.map((e) => `${e.rule}:${e.state}`);

describe("alert rules", function () {
    it("duplicate session: the gateway's alert opens and clears an episode, once", function () {
        const e = engine({});
        const alert = { rule: "duplicate_session", state: "alert", text: "d on two", src: ["1.2.3.4", 5], peer: ["5.6.7.8", 9] };
        const opened = e.gateway("d", alert, 1);
        assert.deepStrictEqual(states(opened), ["duplicate_session:alert"]);
        assert.deepStrictEqual([opened[0].src, opened[0].peer, opened[0].text], [alert.src, alert.peer, "d on two"]);
        assert.deepStrictEqual(states(e.gateway("d", alert, 2)), [], "already open");
        assert.deepStrictEqual(states(e.gateway("d", { ...alert, state: "clear" }, 4)), ["duplicate_session:clear"]);
        for (const bad of [null, {}, { ...alert, rule: "offline" }, { ...alert, state: "on" }, "alert", 7]) {
            assert.deepStrictEqual(e.gateway("d", bad, 5), []);
        }
        assert.deepStrictEqual(engine({ sessions: false }).gateway("d", alert, 1), []);
        assert.deepStrictEqual(engine({ sessions: "false" }).gateway("d", alert, 1), []);
    });

    it("temperature above: one alert per episode, a clear past the hysteresis", function () {
        const e = engine({ tempHigh: "38", hysteresis: "0.5" });
        assert.deepStrictEqual(states(e.reading("d", { Temp: 37.9 }, 1)), []);
        assert.deepStrictEqual(states(e.reading("d", { Temp: 38.2 }, 2)), ["temp_high:alert"]);
        assert.deepStrictEqual(states(e.reading("d", { Temp: 39.0 }, 3)), []);
        assert.deepStrictEqual(states(e.reading("d", { Temp: 37.8 }, 4)), [], "inside the hysteresis");
        const clear = e.reading("d", { Temp: 37.4 }, 5);
        assert.deepStrictEqual(states(clear), ["temp_high:clear"]);
        assert.strictEqual(clear[0].since, 2);
        assert.strictEqual(clear[0].duration, 3);
        assert.deepStrictEqual(states(e.reading("d", { Temp: 38.5 }, 6)), ["temp_high:alert"], "a new episode");
    });

    it("temperature below, per device", function () {
        const e = engine({ tempLow: "35" });
        assert.deepStrictEqual(states(e.reading("a", { Temp: 34.0 }, 1)), ["temp_low:alert"]);
        assert.deepStrictEqual(states(e.reading("b", { Temp: 34.0 }, 1)), ["temp_low:alert"]);
        assert.deepStrictEqual(states(e.reading("a", { Temp: 36.0 }, 2)), ["temp_low:clear"]);
        assert.strictEqual(e.active().length, 1);
        assert.strictEqual(e.active()[0].device, "b");
    });

    it("pulse flat for N seconds, cleared when the signal moves", function () {
        const e = engine({ flatSeconds: "2", flatDelta: "0.05" });
        assert.deepStrictEqual(states(e.reading("d", { PulseSig: 1.0 }, 0)), []);
        assert.deepStrictEqual(states(e.reading("d", { PulseSig: 1.01 }, 1)), [], "window not covered yet");
        assert.deepStrictEqual(states(e.reading("d", { PulseSig: 1.02 }, 2)), ["pulse_flat:alert"]);
        assert.deepStrictEqual(states(e.reading("d", { PulseSig: 1.0 }, 3)), []);
        assert.deepStrictEqual(states(e.reading("d", { PulseSig: 2.1 }, 3.5)), ["pulse_flat:clear"]);
        // A moving signal never alerts.
        const m = engine({ flatSeconds: "1" });
        const all = [];
        for (let t = 0; t < 10; t += 0.1) {
            all.push(...m.reading("d", { PulseSig: 1.5 + Math.sin(t * 6) }, t));
        }
        assert.deepStrictEqual(all, []);
    });

    it("silent for N seconds while online; a reading clears it", function () {
        const e = engine({ silentSeconds: "5" });
        e.status("d", "online", 0);
        assert.deepStrictEqual(states(e.tick(4)), []);
        assert.deepStrictEqual(states(e.tick(5)), ["silent:alert"]);
        assert.deepStrictEqual(states(e.tick(9)), [], "once per episode");
        assert.deepStrictEqual(states(e.reading("d", {}, 10)), ["silent:clear"]);
        e.status("d", "offline", 11);
        assert.deepStrictEqual(states(e.tick(100)), [], "an offline device is not 'silent'");
    });

    it("offline and back online", function () {
        const e = engine({ offline: true });
        assert.deepStrictEqual(states(e.status("d", "online", 0)), []);
        assert.deepStrictEqual(states(e.status("d", "offline", 1)), ["offline:alert"]);
        assert.deepStrictEqual(states(e.status("d", "offline", 2)), []);
        assert.deepStrictEqual(states(e.status("d", "online", 3)), ["offline:clear"]);
        assert.deepStrictEqual(states(engine({ offline: false }).status("d", "offline", 1)), []);
    });

    it("a v1 device in a fleet that should be v2", function () {
        const e = engine({ requireV2: "true" });
        assert.deepStrictEqual(states(e.reading("d", { protocol: "v1" }, 1)), ["protocol_v1:alert"]);
        assert.deepStrictEqual(states(e.reading("d", { protocol: "v1" }, 2)), []);
        assert.deepStrictEqual(states(e.reading("d", { protocol: "v2" }, 3)), ["protocol_v1:clear"]);
        assert.deepStrictEqual(states(engine({}).reading("d", { protocol: "v1" }, 1)), []);
    });

    it("refuses settings that make no sense", function () {
        assert.throws(() => parseRules({ silentSeconds: "0" }), /silentSeconds/);
        assert.throws(() => parseRules({ flatSeconds: "-1" }), /flatSeconds/);
        assert.throws(() => parseRules({ tempHigh: "35", tempLow: "38" }), /tempLow/);
        assert.deepStrictEqual(parseRules({ tempHigh: "", flatSeconds: "abc" }).tempHigh, null);
    });
});
