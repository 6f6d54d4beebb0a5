"use strict";

const assert = require("assert");
const { helper, load, withBroker } = require("./support/flow");
const { waitUntil, deviceId, publish, reading } = require("./support/broker");
const { record } = require("./support/spy");

helper.init(require.resolve("node-red"));

const events = (messages, device) => messages.filter((m) => m.topic === device).map((m) => `${m.payload.rule}:${m.payload.state}`);

describe("medsec alert", function () {
    const suite = withBroker();

    async function alertNode(device, rules) {
        const loaded = await load(suite.broker, {
            type: "medsec-alert", device, tempHigh: "", tempLow: "", flatSeconds: "", silentSeconds: "",
            offline: false, requireV2: false, ...rules,
        });
        await waitUntil(() => loaded.gateway.subscribed.has(`Pico/${device}/json`)
            && loaded.gateway.subscribed.has(`Pico/${device}/status`)
            && loaded.gateway.subscribed.has(`Pico/${device}/alert`), 5000, "subscriptions");
        return loaded;
    }

    it("a device on two connections at once: the gateway's alert, then its clear", async function () {
        const d = deviceId("twice");
        const { node, messages } = await alertNode(d, {});
        const seen = record(node);
        const alert = {
            device: d, rule: "duplicate_session", state: "alert", reason: "new_address",
            text: `${d} on two connections: 10.0.0.8:4000 and 10.0.0.9:5000`,
            src: ["10.0.0.9", 5000], peer: ["10.0.0.8", 4000], ts: 1,
        };
        await publish(suite.pub, `Pico/${d}/alert`, JSON.stringify(alert), { retain: true });
        await waitUntil(() => messages.length === 1, 5000, "the duplicate-session alert");
        assert.deepStrictEqual(events(messages, d), ["duplicate_session:alert"]);
        const got = messages[0].payload;
        assert.strictEqual(got.text, alert.text);
        assert.deepStrictEqual([got.src, got.peer, got.reason], [alert.src, alert.peer, "new_address"]);
        await waitUntil(() => seen.lastStatus().text === "1 active alert", 5000, "status 1 active alert");
        // Unknown rules, bad states and garbage are ignored; the clear ends the episode.
        await publish(suite.pub, `Pico/${d}/alert`, JSON.stringify({ ...alert, rule: "temp_high" }), { retain: true });
        await publish(suite.pub, `Pico/${d}/alert`, JSON.stringify({ ...alert, state: "maybe" }), { retain: true });
        await publish(suite.pub, `Pico/${d}/alert`, JSON.stringify({ ...alert, state: "clear", text: "" }), { retain: true });
        await waitUntil(() => messages.length === 2, 5000, "the clear");
        assert.deepStrictEqual(events(messages, d), ["duplicate_session:alert", "duplicate_session:clear"]);
        assert.match(messages[1].payload.text, /down to one connection/);
        await waitUntil(() => seen.lastStatus().text === "no alerts", 5000, "no alerts");
    });

    it("an open duplicate-session alert is seen by a node that starts later (retained)", async function () {
        const d = deviceId("twice-late");
        const alert = { device: d, rule: "duplicate_session", state: "alert", text: "two", src: null, peer: null };
        await publish(suite.pub, `Pico/${d}/alert`, JSON.stringify(alert), { retain: true });
        const { messages } = await alertNode(d, {});
        await waitUntil(() => messages.length === 1, 5000, "the retained alert");
        assert.deepStrictEqual(events(messages, d), ["duplicate_session:alert"]);
    });

    it("the duplicate-session rule can be switched off", async function () {
        const d = deviceId("twice-off");
        const { messages } = await alertNode(d, { sessions: false, tempHigh: "38" });
        const alert = { device: d, rule: "duplicate_session", state: "alert", text: "two", src: null, peer: null };
        await publish(suite.pub, `Pico/${d}/alert`, JSON.stringify(alert), { retain: true });
        await publish(suite.pub, `Pico/${d}/json`, reading(d, { Temp: 39 }));
        await waitUntil(() => messages.length >= 1, 5000, "the fever alert after it");
        assert.deepStrictEqual(events(messages, d), ["temp_high:alert"]);
    });

    it("a fever episode: one alert, then one clear", async function () {
        const d = deviceId("fever");
        const { node, messages } = await alertNode(d, { tempHigh: "38", hysteresis: "0.2" });
        const seen = record(node);
        for (const temp of [37.0, 38.4, 39.1, 38.6, 37.9, 37.5]) {
            await publish(suite.pub, `Pico/${d}/json`, reading(d, { Temp: temp }));
        }
        await waitUntil(() => messages.length === 2, 5000, "alert and clear");
        assert.deepStrictEqual(events(messages, d), ["temp_high:alert", "temp_high:clear"]);
        assert.strictEqual(messages[0].payload.value, 38.4);
        assert.strictEqual(messages[0].payload.threshold, 38);
        assert.match(messages[0].payload.text, /above 38/);
        assert.strictEqual(messages[1].payload.value, 37.5, "37.9 is inside the 0.2 hysteresis");
        await waitUntil(() => seen.lastStatus().text === "no alerts", 5000, "status back to no alerts");
    });

    it("device offline, then back online", async function () {
        const d = deviceId("off");
        const { node, messages } = await alertNode(d, { offline: true });
        const seen = record(node);
        await publish(suite.pub, `Pico/${d}/status`, "online", { retain: true });
        await publish(suite.pub, `Pico/${d}/status`, "offline", { retain: true });
        await waitUntil(() => messages.length === 1, 5000, "the offline alert");
        await waitUntil(() => seen.lastStatus().text === "1 active alert", 5000, "status 1 active alert");
        node.receive({});
        await waitUntil(() => messages.some((m) => m.topic === "active"), 5000, "the active list");
        const active = messages.find((m) => m.topic === "active").payload;
        assert.deepStrictEqual(active.map((e) => [e.device, e.rule]), [[d, "offline"]]);
        await publish(suite.pub, `Pico/${d}/status`, "online", { retain: true });
        await waitUntil(() => events(messages, d).length === 2, 5000, "the clear");
        assert.deepStrictEqual(events(messages, d), ["offline:alert", "offline:clear"]);
    });

    it("no reading for N seconds, cleared by the next reading", async function () {
        const d = deviceId("quiet");
        const { messages } = await alertNode(d, { silentSeconds: "0.3" });
        const t0 = Date.now();
        await publish(suite.pub, `Pico/${d}/json`, reading(d));
        await waitUntil(() => messages.length === 1, 5000, "the silence alert");
        assert.ok(Date.now() - t0 >= 300, "not before the silence lasted 0.3 s");
        assert.deepStrictEqual(events(messages, d), ["silent:alert"]);
        await publish(suite.pub, `Pico/${d}/json`, reading(d));
        await waitUntil(() => messages.length === 2, 5000, "the clear");
        assert.deepStrictEqual(events(messages, d), ["silent:alert", "silent:clear"]);
    });

    it("pulse signal flat for N seconds, cleared when it moves", async function () {
        const d = deviceId("flat");
        const { messages } = await alertNode(d, { flatSeconds: "0.3", flatDelta: "0.05" });
        // A device keeps sending the same value; the alert comes once 0.3 s are covered.
        await waitUntil(async () => {
            await publish(suite.pub, `Pico/${d}/json`, reading(d, { PulseSig: 1.2 }));
            return messages.length === 1;
        }, 5000, "the flat-pulse alert");
        assert.deepStrictEqual(events(messages, d), ["pulse_flat:alert"]);
        await publish(suite.pub, `Pico/${d}/json`, reading(d, { PulseSig: 2.4 }));
        await waitUntil(() => messages.length === 2, 5000, "the clear");
        assert.deepStrictEqual(events(messages, d), ["pulse_flat:alert", "pulse_flat:clear"]);
    });

    it("a v1 device in a v2 fleet", async function () {
        const d = deviceId("legacy");
        const { messages } = await alertNode(d, { requireV2: true });
        await publish(suite.pub, `Pico/${d}/json`, reading(d, { protocol: "v1" }));
        await publish(suite.pub, `Pico/${d}/json`, reading(d, { protocol: "v1" }));
        await publish(suite.pub, `Pico/${d}/json`, reading(d, { protocol: "v2" }));
        await waitUntil(() => messages.length === 2, 5000, "alert and clear");
        assert.deepStrictEqual(events(messages, d), ["protocol_v1:alert", "protocol_v1:clear"]);
    });

    it("bad settings are reported and subscribe nothing", async function () {
        const d = deviceId("cfg");
        const { gateway } = await load(suite.broker, { type: "medsec-alert", device: d, tempHigh: "35", tempLow: "38" });
        assert.strictEqual(gateway.handlers.size, 0);
        const logged = helper.log().args.map((a) => JSON.stringify(a[0]));
        assert.ok(logged.some((l) => /tempLow must be below tempHigh/.test(l)), logged.join("\n"));
    });
});
