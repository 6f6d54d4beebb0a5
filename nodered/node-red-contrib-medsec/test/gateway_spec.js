"use strict";

const assert = require("assert");
const { helper, load } = require("./support/flow");
const { startBroker, waitUntil, deviceId, publish, reading } = require("./support/broker");
const { record } = require("./support/spy");

helper.init(require.resolve("node-red"));

describe("medsec-gateway", function () {
    let broker;
    before(async function () { broker = await startBroker(); });
    after(async function () { await broker.stop(); });
    afterEach(async function () { await helper.unload(); });

    it("connects with the dashboard account and shares one connection", async function () {
        const { gateway } = await load(broker, { type: "medsec-vitals" });
        await waitUntil(() => gateway.connected, 5000, "gateway to connect");
        assert.ok(gateway.client.connected);
    });

    it("reads a credential given as ${ENV_VAR} from the environment", async function () {
        process.env.MEDSEC_TEST_DASHBOARD_PW = broker.passwords.dashboard;
        try {
            const { gateway, messages } = await load(broker, { type: "medsec-vitals" }, {
                credentials: { gw: { password: "${MEDSEC_TEST_DASHBOARD_PW}", token: "${MEDSEC_TEST_NO_SUCH_VAR}" } },
            });
            await waitUntil(() => gateway.subscribed.has("Pico/+/json"), 5000, "subscription");
            assert.strictEqual(gateway.token(), "", "an unset variable resolves to nothing");
            const dev = deviceId("env");
            const pub = await broker.client("publisher");
            await publish(pub, `Pico/${dev}/json`, reading(dev));
            await waitUntil(() => messages.some((m) => m.topic === dev), 5000, "a reading");
            pub.end();
        } finally {
            delete process.env.MEDSEC_TEST_DASHBOARD_PW;
        }
    });

    it("refused by the broker with a wrong password: nodes show the error, nothing crashes", async function () {
        const { node, gateway } = await load(broker, { type: "medsec-vitals" }, {
            credentials: { gw: { password: "wrong-password", token: "" } },
        });
        const seen = record(node);
        await waitUntil(() => seen.statuses.some((s) => s.fill === "red" && /error|disconnected/.test(s.text)),
            5000, "a red status");
        assert.strictEqual(gateway.connected, false);
    });

    it("never puts the password or the token in the exported flow", async function () {
        const password = broker.passwords.dashboard;
        const token = "tok-" + "x".repeat(30);
        const { gateway } = await load(broker, { type: "medsec-devices" }, {
            credentials: { gw: { password, token } },
        });
        await waitUntil(() => gateway.connected, 5000, "gateway to connect");
        const exported = JSON.stringify(helper._redNodes.getFlows().flows);
        assert.ok(exported.includes("medsec-gateway"));
        assert.ok(!exported.includes(password), "password in the flow");
        assert.ok(!exported.includes(token), "token in the flow");
        // The credentials are there, just not in the flow.
        assert.strictEqual(helper._redNodes.getCredentials("gw").token, token);
    });

    it("subscribes again after the broker restarts, and when it was down at start", async function () {
        const dev = deviceId("restart");
        await broker.halt();
        const { node, gateway, messages } = await load(broker, { type: "medsec-vitals", device: dev });
        const seen = record(node);
        await waitUntil(() => seen.statuses.some((s) => s.fill === "red"), 5000, "a red status while the broker is down");
        const warnings = [];
        gateway.on("call:warn", (call) => warnings.push(String(call.args[0])));
        let attempts = 0;
        gateway.client.on("reconnect", () => { attempts += 1; });
        await waitUntil(() => attempts >= 3, 8000, "three reconnect attempts");
        assert.ok(warnings.length <= 1, `one warning per kind of failure, got ${warnings.length}`);
        await broker.start();
        await waitUntil(() => gateway.subscribed.has(`Pico/${dev}/json`), 10000, "subscription once the broker is up");
        const pub = await broker.client("publisher");
        await publish(pub, `Pico/${dev}/json`, reading(dev, { Temp: 36.1 }));
        await waitUntil(() => messages.length === 1, 5000, "a reading");
        pub.end();
        await broker.halt();
        await waitUntil(() => !gateway.connected, 5000, "the gateway to notice");
        await broker.start();
        await waitUntil(() => gateway.subscribed.has(`Pico/${dev}/json`), 10000, "subscription after the restart");
        const pub2 = await broker.client("publisher");
        await publish(pub2, `Pico/${dev}/json`, reading(dev, { Temp: 36.2 }));
        await waitUntil(() => messages.length === 2, 5000, "a reading after the restart");
        assert.deepStrictEqual(messages.map((m) => m.payload.Temp), [36.1, 36.2]);
        pub2.end();
    });

    it("releases the connection when the flow stops", async function () {
        const { gateway } = await load(broker, { type: "medsec-vitals" });
        await waitUntil(() => gateway.connected, 5000, "gateway to connect");
        const client = gateway.client;
        await helper.unload();
        assert.strictEqual(client.connected, false);
        assert.ok(client.disconnected);
    });
});
