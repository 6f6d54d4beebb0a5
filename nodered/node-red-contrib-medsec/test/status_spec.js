"use strict";

const assert = require("assert");
const { helper, load, withBroker } = require("./support/flow");
const { waitUntil, deviceId, publish, reading } = require("./support/broker");

helper.init(require.resolve("node-red"));

describe("medsec status", function () {
    const suite = withBroker();

    it("reports the retained status at start, then each change once", async function () {
        const a = deviceId("s");
        await publish(suite.pub, `Pico/${a}/status`, "online", { retain: true });
        const { gateway, messages } = await load(suite.broker, { type: "medsec-status", device: a });
        await waitUntil(() => messages.length === 1, 5000, "the retained status");
        assert.strictEqual(messages[0].topic, a);
        assert.strictEqual(messages[0].payload.status, "online");
        assert.strictEqual(messages[0].payload.online, true);
        assert.strictEqual(messages[0].payload.retained, true);
        await waitUntil(() => gateway.subscribed.has(`Pico/${a}/status`), 5000, "subscription");
        await publish(suite.pub, `Pico/${a}/status`, "online", { retain: true }); // not a change
        await publish(suite.pub, `Pico/${a}/status`, "offline", { retain: true });
        await waitUntil(() => messages.length === 2, 5000, "the offline change");
        assert.strictEqual(messages[1].payload.status, "offline");
        assert.strictEqual(messages[1].payload.online, false);
        assert.strictEqual(messages[1].payload.retained, false);
        await publish(suite.pub, `Pico/${a}/status`, "online", { retain: true });
        await waitUntil(() => messages.length === 3, 5000, "back online");
        assert.strictEqual(messages[2].payload.status, "online");
    });

    it("reports an unexpected status payload to Catch nodes and ignores it", async function () {
        const a = deviceId("odd");
        const { node, gateway, messages } = await load(suite.broker, { type: "medsec-status", device: a });
        const errors = [];
        node.on("call:error", (call) => errors.push(call.args));
        await waitUntil(() => gateway.subscribed.has(`Pico/${a}/status`), 5000, "subscription");
        await publish(suite.pub, `Pico/${a}/status`, "maybe");
        await publish(suite.pub, `Pico/${a}/status`, "online");
        await waitUntil(() => messages.length === 1, 5000, "the valid status");
        assert.strictEqual(messages[0].payload.status, "online");
        await waitUntil(() => errors.length === 1, 5000, "the error");
        assert.match(String(errors[0][0]), /unexpected status "maybe"/);
        assert.strictEqual(errors[0][1].topic, a);
    });

    it("answers an input message with the fleet and each device's last-seen time", async function () {
        const a = deviceId("f1");
        const b = deviceId("f2");
        const { node, gateway, messages } = await load(suite.broker, { type: "medsec-status" });
        await waitUntil(() => gateway.subscribed.has("Pico/+/json") && gateway.subscribed.has("Pico/+/status"),
            5000, "subscriptions");
        await publish(suite.pub, `Pico/${a}/status`, "online", { retain: true });
        await publish(suite.pub, `Pico/${b}/status`, "offline", { retain: true });
        await publish(suite.pub, `Pico/${a}/json`, reading(a, { ts: 1763790000.5, protocol: "v1" }));
        // The reading arrives after the status changes (same publisher, QoS 1, in order).
        await waitUntil(() => messages.filter((m) => m.topic === b).length === 1, 5000, "b's status");
        const snapshot = async () => {
            node.receive({ payload: "now?" });
            await waitUntil(() => messages.some((m) => m.topic === "fleet"), 5000, "a snapshot");
            const last = messages.filter((m) => m.topic === "fleet").pop();
            messages.length = 0;
            return last.payload;
        };
        const fleet = await waitUntil(async () => {
            const s = await snapshot();
            const ea = s.find((e) => e.device === a);
            return ea && ea.lastSeen ? s : null;
        }, 5000, "a's last-seen");
        const ea = fleet.find((e) => e.device === a);
        const eb = fleet.find((e) => e.device === b);
        assert.strictEqual(ea.online, true);
        assert.strictEqual(ea.lastSeen, 1763790000.5);
        assert.strictEqual(ea.protocol, "v1");
        assert.strictEqual(eb.online, false);
        assert.strictEqual(eb.lastSeen, null);
        const ids = fleet.map((e) => e.device);
        assert.deepStrictEqual(ids, [...ids].sort(), "sorted by id");
    });
});
