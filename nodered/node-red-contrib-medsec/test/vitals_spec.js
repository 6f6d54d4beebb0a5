"use strict";

const assert = require("assert");
const { helper, load, withBroker } = require("./support/flow");
const { waitUntil, deviceId, publish, reading } = require("./support/broker");
const { record } = require("./support/spy");

helper.init(require.resolve("node-red"));

describe("medsec vitals", function () {
    const suite = withBroker();

    async function ready(gateway, filter) {
        await waitUntil(() => gateway.subscribed.has(filter), 5000, `subscription to ${filter}`);
    }

    it("emits one message per reading of every device, numbers as numbers", async function () {
        const { gateway, messages } = await load(suite.broker, { type: "medsec-vitals" });
        await ready(gateway, "Pico/+/json");
        const a = deviceId("a");
        const b = deviceId("b");
        await publish(suite.pub, `Pico/${a}/json`, reading(a, { Temp: 37.25, protocol: "v1", seq: null }));
        await publish(suite.pub, `Pico/${b}/json`, reading(b, { seq: 7 }));
        await publish(suite.pub, `Pico/${a}/json`, reading(a, { Temp: 37.5, protocol: "v1" }));
        const mine = () => messages.filter((m) => m.topic === a || m.topic === b);
        await waitUntil(() => mine().length === 3, 5000, "three readings");
        const [first, second, third] = mine();
        assert.strictEqual(first.topic, a);
        assert.strictEqual(first.payload.Temp, 37.25);
        assert.strictEqual(first.payload.protocol, "v1");
        assert.strictEqual(typeof first.payload.ts, "number");
        assert.strictEqual(second.topic, b);
        assert.strictEqual(second.payload.seq, 7);
        assert.strictEqual(third.payload.Temp, 37.5);
    });

    it("follows one device when configured so", async function () {
        const a = deviceId("only");
        const b = deviceId("other");
        const { gateway, messages } = await load(suite.broker, { type: "medsec-vitals", device: a });
        await ready(gateway, `Pico/${a}/json`);
        await publish(suite.pub, `Pico/${b}/json`, reading(b));
        await publish(suite.pub, `Pico/${a}/json`, reading(a, { Temp: 36.1 }));
        await publish(suite.pub, `Pico/${a}/json`, reading(a, { Temp: 36.2 }));
        await waitUntil(() => messages.length === 2, 5000, "two readings of the device");
        assert.deepStrictEqual(messages.map((m) => m.topic), [a, a]);
        assert.deepStrictEqual(messages.map((m) => m.payload.Temp), [36.1, 36.2]);
    });

    it("shows whether its device is online in the node status", async function () {
        const a = deviceId("st");
        const { node, gateway } = await load(suite.broker, { type: "medsec-vitals", device: a });
        const seen = record(node);
        await ready(gateway, `Pico/${a}/status`);
        await publish(suite.pub, `Pico/${a}/status`, "online", { retain: true });
        await waitUntil(() => seen.lastStatus().text === `${a}: online`, 5000, "online status");
        await publish(suite.pub, `Pico/${a}/status`, "offline", { retain: true });
        await waitUntil(() => seen.lastStatus().text === `${a}: offline`, 5000, "offline status");
    });

    it("counts the devices online across the fleet", async function () {
        const { node, gateway } = await load(suite.broker, { type: "medsec-vitals" });
        const seen = record(node);
        await ready(gateway, "Pico/+/status");
        const count = () => Number((/^(\d+) device/.exec(seen.lastStatus().text || "") || [])[1]);
        await waitUntil(() => !Number.isNaN(count()), 5000, "a count");
        const before = count();
        const a = deviceId("c1");
        const b = deviceId("c2");
        await publish(suite.pub, `Pico/${a}/status`, "online", { retain: true });
        await publish(suite.pub, `Pico/${b}/status`, "online", { retain: true });
        await waitUntil(() => count() === before + 2, 5000, "two more online");
        await publish(suite.pub, `Pico/${a}/status`, "offline", { retain: true });
        await waitUntil(() => count() === before + 1, 5000, "one went offline");
    });

    it("reports a malformed reading to Catch nodes and keeps going", async function () {
        const a = deviceId("bad");
        const { node, gateway, messages } = await load(suite.broker, { type: "medsec-vitals", device: a });
        const seen = record(node);
        await ready(gateway, `Pico/${a}/json`);
        await publish(suite.pub, `Pico/${a}/json`, "{not json");
        await publish(suite.pub, `Pico/${a}/json`, reading("someone-else"));
        await publish(suite.pub, `Pico/${a}/json`, reading(a, { Temp: 36.9 }));
        await waitUntil(() => messages.length === 1, 5000, "the good reading");
        assert.strictEqual(messages[0].payload.Temp, 36.9);
        await waitUntil(() => seen.errors.length === 2, 5000, "two errors");
        assert.match(seen.errorText()[0], /not JSON/);
        assert.match(seen.errorText()[1], /names device someone-else/);
        // The message given to node.error is what a Catch node receives: it names the device.
        assert.strictEqual(seen.errors[0][1].topic, a);
    });

    it("refuses an invalid device id in its settings", async function () {
        const { node, messages } = await load(suite.broker, { type: "medsec-vitals", device: "bad/#" });
        assert.strictEqual(messages.length, 0);
        const gw = helper.getNode("gw");
        assert.strictEqual(gw.handlers.size, 0, "no subscription for an invalid id");
        assert.ok(node);
    });
});
