"use strict";

// The key-admin API here is a stand-in speaking the contract (DESIGN.md "Key administration"):
// the node's side of it (requests, headers, errors) is what is under test. The Python e2e test
// (tests/nodered/) drives the real API through the running dashboard flow.
const assert = require("assert");
const http = require("http");
const { helper, load } = require("./support/flow");
const { waitUntil, freePort } = require("./support/broker");
const { record } = require("./support/spy");
const { useFakeApi } = require("./support/fakeapi");
const { request } = require("../nodes/lib/adminapi");

helper.init(require.resolve("node-red"));

const TOKEN = "test-token-" + "k".repeat(20);
const MANAGE = "manage-token-" + "m".repeat(20);

function fakeApi() {
    const devices = new Map([["pico-1", { id: "pico-1", protocol: "v1", state: "active" }]]);
    const calls = [];
    const server = http.createServer((req, res) => {
        let body = "";
        req.on("data", (d) => { body += d; });
        req.on("end", () => {
            calls.push({ method: req.method, url: req.url, auth: req.headers.authorization, body: body ? JSON.parse(body) : null });
            const reply = (status, data) => {
                res.writeHead(status, { "Content-Type": "application/json" });
                res.end(JSON.stringify(data));
            };
            if (![`Bearer ${TOKEN}`, `Bearer ${MANAGE}`].includes(req.headers.authorization)) {
                return reply(401, { error: "missing or wrong admin token" });
            }
            const m = /^\/api\/v1\/devices(?:\/([^/]+))?(\/rotate)?$/.exec(req.url);
            if (!m) {
                return reply(404, { error: "not found" });
            }
            const id = m[1] && decodeURIComponent(m[1]);
            if (req.method === "GET" && !id) {
                return reply(200, [...devices.values()]);
            }
            if (req.method === "POST" && !id) {
                const b = JSON.parse(body);
                if (devices.has(b.id)) {
                    return reply(409, { error: `device ${b.id} exists` });
                }
                devices.set(b.id, { id: b.id, protocol: b.protocol, state: "active" });
                return reply(201, { id: b.id, protocol: b.protocol, key: "k".repeat(32) });
            }
            if (!devices.has(id)) {
                return reply(404, { error: `no device ${id}` });
            }
            if (req.method === "POST" && m[2]) {
                return reply(200, { id, key: "r".repeat(32) });
            }
            if (req.method === "DELETE") {
                devices.get(id).state = "revoked";
                return reply(200, devices.get(id));
            }
            return reply(200, devices.get(id));
        });
    });
    return { server, calls, devices };
}

describe("medsec devices", function () {
    const api = useFakeApi(fakeApi);

    async function devicesNode(action, token = TOKEN, adminUrl = api.url, manageToken = "") {
        return load(null, { type: "medsec-devices", action }, {
            credentials: { gw: { password: "", token, manageToken } },
            gatewayProps: { adminUrl },
        });
    }

    it("lists devices with the admin token", async function () {
        const { node, messages } = await devicesNode("list");
        node.receive({});
        await waitUntil(() => messages.length === 1, 5000, "the list");
        assert.deepStrictEqual(messages[0].payload.map((d) => d.id), ["pico-1"]);
        assert.strictEqual(messages[0].statusCode, 200);
        assert.strictEqual(api.calls[0].auth, `Bearer ${TOKEN}`);
        assert.strictEqual(api.calls[0].url, "/api/v1/devices");
    });

    it("adds, rotates and revokes, msg.action overriding the node's setting", async function () {
        const { node, messages } = await devicesNode("list");
        node.receive({ action: "add", payload: { id: "pico-9", protocol: "v2" } });
        await waitUntil(() => messages.length === 1, 5000, "add");
        assert.strictEqual(messages[0].statusCode, 201);
        assert.strictEqual(messages[0].payload.key.length, 32, "credentials come back on add");
        assert.deepStrictEqual(api.calls[0].body, { id: "pico-9", protocol: "v2" });
        node.receive({ action: "rotate", payload: "pico-9" });
        await waitUntil(() => messages.length === 2, 5000, "rotate");
        assert.deepStrictEqual([api.calls[1].method, api.calls[1].url], ["POST", "/api/v1/devices/pico-9/rotate"]);
        node.receive({ action: "revoke", payload: { id: "pico-9" } });
        await waitUntil(() => messages.length === 3, 5000, "revoke");
        assert.deepStrictEqual([api.calls[2].method, api.calls[2].url], ["DELETE", "/api/v1/devices/pico-9"]);
        assert.strictEqual(api.devices.get("pico-9").state, "revoked");
    });

    it("reads with the read token and writes with the manage token when one is set", async function () {
        const { node, messages } = await devicesNode("list", TOKEN, api.url, MANAGE);
        node.receive({});
        await waitUntil(() => messages.length === 1, 5000, "the list");
        node.receive({ action: "add", payload: { id: "pico-m", protocol: "v1" } });
        await waitUntil(() => messages.length === 2, 5000, "add");
        node.receive({ action: "revoke", payload: "pico-m" });
        await waitUntil(() => messages.length === 3, 5000, "revoke");
        assert.deepStrictEqual(api.calls.map((c) => [c.method, c.auth]), [
            ["GET", `Bearer ${TOKEN}`], ["POST", `Bearer ${MANAGE}`], ["DELETE", `Bearer ${MANAGE}`]]);
    });

    it("API errors reach done(err) with the API's message, never the token", async function () {
        const { node, messages } = await devicesNode("show");
        const seen = record(node);
        node.receive({ payload: "nobody" });
        await waitUntil(() => seen.errors.length === 1, 5000, "the error");
        assert.match(seen.errorText()[0], /no device nobody/);
        assert.strictEqual(seen.errors[0][1].statusCode, 404, "the msg handed to Catch nodes has the status");
        assert.strictEqual(messages.length, 0);
    });

    it("a wrong token is refused by the API; the message does not echo it", async function () {
        const wrong = await devicesNode("list", "wrong-token");
        const seen2 = record(wrong.node);
        wrong.node.receive({});
        await waitUntil(() => seen2.errors.length === 1, 5000, "the 401");
        assert.match(seen2.errorText()[0], /wrong admin token/);
        assert.ok(!seen2.errorText()[0].includes("wrong-token"));
    });

    it("bad input is refused before any request", async function () {
        const { node } = await devicesNode("add");
        const seen = record(node);
        node.receive({ payload: { id: "bad id with spaces" } });
        node.receive({ action: "explode", payload: "pico-1" });
        await waitUntil(() => seen.errors.length === 2, 5000, "two errors");
        assert.match(seen.errorText()[0], /needs a device id/);
        assert.match(seen.errorText()[1], /unknown action/);
        assert.strictEqual(api.calls.length, 0);
    });

    it("an unreachable API is an error, not a crash", async function () {
        const port = await freePort();
        const { node } = await devicesNode("list", TOKEN, `http://127.0.0.1:${port}/api/v1`);
        const seen = record(node);
        node.receive({});
        await waitUntil(() => seen.errors.length === 1, 5000, "the error");
        assert.match(seen.errorText()[0], /unreachable: ECONNREFUSED/);
        assert.ok(!seen.errorText()[0].includes(TOKEN));
    });

    it("a dashboard session changes devices only with an operator's or admin's login", async function () {
        const { node, messages } = await devicesNode("list");
        const seen = record(node);
        const viewer = { user: { username: "viewer", role: "viewer" }, socketId: "s1" };
        let n = 0;
        for (const action of ["add", "rotate", "revoke"]) {
            node.receive({ action, payload: { id: "pico-1" }, _client: viewer });
            node.receive({ action, payload: { id: "pico-1" }, _client: { socketId: "s2" } }); // no login
            node.receive({ action, payload: { id: "pico-1" }, _client: { user: { username: "x", role: "root" } } });
            n += 3;
            await waitUntil(() => seen.errors.length === n, 5000, `${action} refused`);
        }
        assert.strictEqual(api.calls.length, 0, "nothing refused reached the API");
        assert.ok(seen.errorText().every((e) => /refused/.test(e)), seen.errorText());
        assert.strictEqual(seen.errors[0][1].statusCode, 403);
        // Reading is every role's; the flow itself (no _client) and operators and admins may change.
        const allowed = [
            { action: "show", payload: "pico-1", _client: viewer },
            { action: "add", payload: { id: "pico-op", protocol: "v2" },
                _client: { user: { username: "operator", role: "operator" }, socketId: "s3" } },
            { action: "rotate", payload: "pico-op", _client: { user: { username: "admin", role: "admin" } } },
            { action: "revoke", payload: "pico-op" },
        ];
        for (const [i, msg] of allowed.entries()) {
            node.receive(msg);
            await waitUntil(() => messages.length === i + 1, 5000, msg.action);
        }
        assert.deepStrictEqual(messages.map((m) => m.statusCode).sort(), [200, 200, 200, 201]);
        const added = messages.find((m) => m.statusCode === 201);
        assert.strictEqual(added._client.socketId, "s3", "the answer keeps the session that asked");
    });

    it("maps actions onto the API (pure)", function () {
        assert.deepStrictEqual(request("add", { id: "a", protocol: "v1", key: "1234567890123456", iv: "" }),
            { method: "POST", path: "/devices", body: { id: "a", protocol: "v1", key: "1234567890123456" } });
        assert.deepStrictEqual(request("show", "a.b-c_d"), { method: "GET", path: "/devices/a.b-c_d" });
        assert.throws(() => request("revoke", { id: "../x" }), /needs a device id/);
        assert.throws(() => request("revoke", null), /needs a device id/);
    });
});
