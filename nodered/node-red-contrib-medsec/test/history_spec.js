"use strict";

// The key-admin API here is a stand-in speaking the history contract (docs/history.md): the node's
// side of it (paths, token, paging, errors) is under test. tests/history and tests/nodered drive
// the real API.
const assert = require("assert");
const http = require("http");
const { helper, load } = require("./support/flow");
const { waitUntil } = require("./support/broker");
const { record } = require("./support/spy");
const { useFakeApi } = require("./support/fakeapi");
const { query, path } = require("../nodes/lib/history");

helper.init(require.resolve("node-red"));

const READ = "read-token-" + "r".repeat(20);
const MANAGE = "manage-token-" + "m".repeat(20);

// 25 readings of pico-1 at ts 1000..1024; pages of `pageSize` with an opaque cursor.
function fakeApi(pageSize = 10) {
    const calls = [];
    const rows = Array.from({ length: 25 }, (_, i) => ({ ts: 1000 + i, seq: i, protocol: "v2", Temp: 36 + i / 10 }));
    const server = http.createServer((req, res) => {
        const url = new URL(req.url, "http://x");
        calls.push({ method: req.method, url, auth: req.headers.authorization });
        const reply = (status, data) => {
            res.writeHead(status, { "Content-Type": "application/json" });
            res.end(JSON.stringify(data));
        };
        if (req.headers.authorization !== `Bearer ${READ}`) {
            return reply(401, { error: "unknown or revoked token" });
        }
        const m = /^\/api\/v1\/devices\/([^/]+)\/readings$/.exec(url.pathname);
        if (!m || req.method !== "GET") {
            return reply(404, { error: "not found" });
        }
        if (decodeURIComponent(m[1]) === "broken") {
            return reply(503, { error: "history store unavailable: db:5432/history" });
        }
        const from = Number(url.searchParams.get("from"));
        const to = Number(url.searchParams.get("to"));
        const after = url.searchParams.has("cursor") ? Number(url.searchParams.get("cursor").slice(1)) : -1;
        const inRange = rows.filter((r) => r.ts >= from && r.ts < to && r.ts > after);
        const items = inRange.slice(0, pageSize);
        const next = inRange.length > pageSize ? `r${items[items.length - 1].ts}` : null;
        return reply(200, { device: m[1], from, to, step: url.searchParams.get("step"), items, next });
    });
    return { server, calls };
}

describe("medsec history", function () {
    const api = useFakeApi(fakeApi);

    async function historyNode(props = {}, token = READ, adminUrl = api.url) {
        return load(null, { type: "medsec-history", ...props }, {
            credentials: { gw: { password: "", token, manageToken: MANAGE } },
            gatewayProps: { adminUrl },
        });
    }

    it("follows every page of a range with the read token and keeps the message's other properties", async function () {
        const { node, messages } = await historyNode();
        node.receive({ payload: { device: "pico-1", from: 1002, to: 1024 }, _client: { socketId: "s1" } });
        await waitUntil(() => messages.length === 1, 5000, "the readings");
        const msg = messages[0];
        assert.deepStrictEqual(msg.payload.map((r) => r.ts), Array.from({ length: 22 }, (_, i) => 1002 + i));
        assert.deepStrictEqual([msg.device, msg.from, msg.to, msg.step, msg.truncated], ["pico-1", 1002, 1024, "raw", false]);
        assert.strictEqual(msg._client.socketId, "s1", "the answer goes back to the viewer that asked");
        assert.strictEqual(api.calls.length, 3, "three pages");
        assert.ok(api.calls.every((c) => c.method === "GET" && c.auth === `Bearer ${READ}`));
        assert.strictEqual(api.calls[1].url.searchParams.get("cursor"), "r1011");
    });

    it("a device id alone asks for the node's span up to now", async function () {
        const { node, messages } = await historyNode({ span: "24h", step: "1m" });
        const before = Date.now() / 1000;
        node.receive({ payload: "pico-1" });
        await waitUntil(() => messages.length === 1, 5000, "the answer");
        const q = api.calls[0].url.searchParams;
        assert.strictEqual(q.get("step"), "1m");
        assert.ok(Number(q.get("to")) >= before && Number(q.get("to")) - Number(q.get("from")) === 86400);
    });

    it("stops at maxItems and says so", async function () {
        const { node, messages } = await historyNode({ maxItems: 10 });
        node.receive({ payload: { device: "pico-1", from: 0, to: 5000 } });
        await waitUntil(() => messages.length === 1, 5000, "the answer");
        assert.strictEqual(messages[0].payload.length, 10);
        assert.strictEqual(messages[0].truncated, true);
    });

    it("bad input is refused before any request; API errors reach Catch without the token", async function () {
        const { node } = await historyNode();
        const seen = record(node);
        node.receive({ payload: { device: "bad id" } });
        node.receive({ payload: { device: "pico-1", from: 10, to: 5 } });
        node.receive({ payload: { device: "pico-1", step: "5m" } });
        node.receive({ payload: { device: "pico-1", from: "yesterday" } });
        await waitUntil(() => seen.errors.length === 4, 5000, "four refusals");
        assert.strictEqual(api.calls.length, 0);
        node.receive({ payload: "broken" });
        await waitUntil(() => seen.errors.length === 5, 5000, "the 503");
        assert.match(seen.errorText()[4], /history store unavailable/);
        assert.strictEqual(seen.errors[4][1].statusCode, 503);
    });

    it("a wrong token is refused by the API; the error does not echo it", async function () {
        const wrong = await historyNode({}, "wrong-token");
        const seen2 = record(wrong.node);
        wrong.node.receive({ payload: "pico-1" });
        await waitUntil(() => seen2.errors.length === 1, 5000, "the 401");
        assert.ok(!seen2.errorText()[0].includes("wrong-token"));
    });

    it("builds queries (pure)", function () {
        assert.deepStrictEqual(query({ payload: "a.b" }, { span: "7d" }, 1000000), { device: "a.b", from: 1000000 - 604800, to: 1000000, step: "raw" });
        assert.deepStrictEqual(query({ payload: { span: 60, step: "1m" }, device: "d" }, {}, 100), { device: "d", from: 40, to: 100, step: "1m" });
        assert.deepStrictEqual(query({ payload: { device: "d", from: "5", to: "9" } }, {}, 100), { device: "d", from: 5, to: 9, step: "raw" });
        assert.throws(() => query({ payload: {} }, {}, 1), /needs a device id/);
        assert.throws(() => query({ payload: { device: "d", span: -1 } }, {}, 1), /span must be/);
        assert.strictEqual(path({ device: "a_b", from: 1, to: 2, step: "raw" }, "r1_2"),
            "/devices/a_b/readings?from=1&to=2&step=raw&limit=10000&cursor=r1_2");
    });
});
