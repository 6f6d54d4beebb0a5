"use strict";

// The dashboard's roles: logins, HTTP routes, the socket's pages, the editor, the plugin's stamp.
const assert = require("assert");
const crypto = require("crypto");
const access = require("../nodes/lib/access");
const { stamp } = require("../nodes/dashboard-users");

const PASSWORDS = { viewer: "v-" + "x".repeat(30), operator: "o-" + "y".repeat(30), admin: "a-" + "z".repeat(30) };
const USERS = Object.fromEntries(Object.entries(PASSWORDS).map(([u, p]) => [u, {
    role: u, sha256: crypto.createHash("sha256").update(p).digest("hex"),
}]));
const basic = (u, p) => "Basic " + Buffer.from(`${u}:${p}`).toString("base64");
const logs = [];
const log = (line) => logs.push(line);

function call(mw, path, header) {
    const res = { status: null, headers: {}, writeHead(s, h) { this.status = s; this.headers = h; }, end() {} };
    let passed = false;
    mw({ path, headers: header ? { authorization: header } : {} }, res, () => { passed = true; });
    return passed ? 200 : res.status;
}

// A socket.io socket as far as the middleware touches it.
function fakeSocket(header, { url = "/dashboard/socket.io/?EIO=4&transport=polling", xdomain = false } = {}) {
    const sent = [];
    const socket = {
        client: { conn: { request: { url, headers: header ? { authorization: header } : {} }, closed: false,
            close() { this.closed = true; } } },
        handshake: { xdomain },
        data: {},
        emit(event, ...args) { sent.push([event, ...args]); return true; },
        use(fn) { this.packetMiddleware = fn; },
    };
    return { socket, sent };
}

const CONFIG = {
    pages: { p1: { path: "/fleet" }, p2: { path: "/device" }, p3: { path: "/alerts" }, p4: { path: "/devices" } },
    groups: { g1: { page: "p1" }, g3: { page: "p3" }, g4: { page: "p4" } },
    widgets: { w1: { props: { group: "g1" } }, w3: { props: { group: "g3" } }, w4: { props: { group: "g4" } } },
};

describe("dashboard access by role", function () {
    it("authenticates each login with its own password only", function () {
        for (const [user, pass] of Object.entries(PASSWORDS)) {
            assert.deepStrictEqual(access.authenticate(USERS, basic(user, pass)), { username: user, role: user });
            for (const other of Object.keys(PASSWORDS).filter((o) => o !== user)) {
                assert.strictEqual(access.authenticate(USERS, basic(other, pass)), null);
            }
        }
        for (const bad of [undefined, "", "Bearer x", "Basic !!!", basic("nobody", PASSWORDS.admin),
            basic("viewer", ""), basic("", PASSWORDS.viewer), basic("constructor", "x"), basic("__proto__", "")]) {
            assert.strictEqual(access.authenticate(USERS, bad), null, String(bad));
        }
    });

    it("dashboard HTTP: a login for everything, the Devices page for operators and admins", function () {
        const mw = access.httpMiddleware(USERS, "/dashboard", log);
        for (const path of ["/dashboard", "/dashboard/fleet", "/dashboard/devices", "/dashboard/assets/x.js", "/api/x"]) {
            assert.strictEqual(call(mw, path), 401, path);
            assert.strictEqual(call(mw, path, basic("viewer", "wrong")), 401, path);
        }
        for (const page of ["/fleet", "/device", "/alerts"]) {
            for (const user of Object.keys(PASSWORDS)) {
                assert.strictEqual(call(mw, "/dashboard" + page, basic(user, PASSWORDS[user])), 200, user + page);
            }
        }
        for (const path of ["/dashboard/devices", "/dashboard/devices/", "/dashboard/devices/x"]) {
            assert.strictEqual(call(mw, path, basic("viewer", PASSWORDS.viewer)), 403, path);
            assert.strictEqual(call(mw, path, basic("operator", PASSWORDS.operator)), 200, path);
            assert.strictEqual(call(mw, path, basic("admin", PASSWORDS.admin)), 200, path);
        }
        for (const path of ["/dashboard/_debug/datastore/w4", "/dashboard/_debug/statestore/w4"]) {
            assert.strictEqual(call(mw, path, basic("viewer", PASSWORDS.viewer)), 403, path);
            assert.strictEqual(call(mw, path, basic("operator", PASSWORDS.operator)), 403, path);
            assert.strictEqual(call(mw, path, basic("admin", PASSWORDS.admin)), 200, path);
        }
        assert.ok(logs.some((l) => /event=refused reason=page user=viewer/.test(l)));
    });

    it("the editor guard answers 403 to viewers' and operators' logins, lets the rest reach Node-RED", function () {
        const mw = access.adminMiddleware(USERS, "/dashboard", log);
        assert.strictEqual(call(mw, "/flows", basic("viewer", PASSWORDS.viewer)), 403);
        assert.strictEqual(call(mw, "/dashboard/fleet", basic("viewer", PASSWORDS.viewer)), 200, "the dashboard's own");
        assert.strictEqual(call(mw, "/", basic("operator", PASSWORDS.operator)), 403);
        assert.strictEqual(call(mw, "/flows", basic("admin", PASSWORDS.admin)), 200);
        assert.strictEqual(call(mw, "/flows"), 200, "no Basic header: Node-RED's own token check decides");
    });

    it("adminAuth: only the admin logs into the editor, with every permission", async function () {
        const auth = access.adminAuth(USERS);
        assert.deepStrictEqual(await auth.authenticate("admin", PASSWORDS.admin), { username: "admin", permissions: "*" });
        assert.strictEqual(await auth.authenticate("admin", "wrong"), null);
        assert.strictEqual(await auth.authenticate("viewer", PASSWORDS.viewer), null);
        assert.strictEqual(await auth.authenticate("operator", PASSWORDS.operator), null);
        assert.strictEqual(await auth.users("viewer"), null);
        assert.deepStrictEqual(await auth.users("admin"), { username: "admin", permissions: "*" });
    });

    it("the socket: transport, origin and login checks, then the role's pages both ways", function () {
        const mw = access.ioMiddleware(USERS, log);
        const results = [];
        const next = (err) => results.push(err ? err.message : "ok");
        const direct = fakeSocket(basic("admin", PASSWORDS.admin), { url: "/x?EIO=4&transport=websocket" });
        mw(direct.socket, next);
        assert.ok(direct.socket.client.conn.closed);
        mw(fakeSocket(basic("admin", PASSWORDS.admin), { xdomain: true }).socket, next);
        mw(fakeSocket(undefined).socket, next);
        mw(fakeSocket(basic("viewer", "wrong")).socket, next);
        assert.deepStrictEqual(results, ["cross-origin", "unauthorized", "unauthorized"]);

        const viewer = fakeSocket(basic("viewer", PASSWORDS.viewer));
        mw(viewer.socket, next);
        assert.deepStrictEqual(viewer.socket.data.medsecUser, { username: "viewer", role: "viewer" });
        const inbound = (event, id) => {
            let passed = false;
            viewer.socket.packetMiddleware([event, id, {}], () => { passed = true; });
            return passed;
        };
        assert.strictEqual(inbound("widget-send", "w1"), false, "nothing before the ui-config");
        viewer.socket.emit("ui-config", "base", CONFIG);
        const shown = viewer.sent[0][2];
        assert.deepStrictEqual(Object.keys(shown.pages), ["p1", "p2", "p3"]);
        assert.deepStrictEqual(Object.keys(shown.groups), ["g1", "g3"]);
        assert.deepStrictEqual(Object.keys(shown.widgets), ["w1", "w3"]);
        for (const event of ["widget-send", "widget-action", "widget-change", "widget-load"]) {
            assert.strictEqual(inbound(event, "w4"), false, event);
            assert.strictEqual(inbound(event, "w1"), true, event);
        }
        viewer.socket.emit("msg-input:w4", { payload: "secret" });
        viewer.socket.emit("widget-load:w4", { payload: "secret" });
        viewer.socket.emit("msg-input:w3", { payload: "alert" });
        assert.deepStrictEqual(viewer.sent.slice(1).map((e) => e[0]), ["msg-input:w3"]);

        const operator = fakeSocket(basic("operator", PASSWORDS.operator));
        mw(operator.socket, next);
        operator.socket.emit("ui-config", "base", CONFIG);
        assert.deepStrictEqual(Object.keys(operator.sent[0][2].pages), ["p1", "p2", "p3", "p4"]);
        operator.socket.emit("msg-input:w4", { payload: "list" });
        assert.strictEqual(operator.sent.length, 2);
        const admin = fakeSocket(basic("admin", PASSWORDS.admin));
        mw(admin.socket, next);
        assert.strictEqual(admin.socket.packetMiddleware, undefined, "the admin sees every page");
        assert.deepStrictEqual(results.slice(3), ["ok", "ok", "ok"]);
    });

    it("only operators and admins may ask a dashboard for add, rotate, revoke, import", function () {
        const as = (role) => ({ _client: { user: { username: role, role }, socketId: "s" } });
        for (const action of access.WRITE_ACTIONS) {
            assert.match(access.refuseAction(action, as("viewer")), /refused/);
            assert.match(access.refuseAction(action, as("nobody")), /refused/);
            assert.match(access.refuseAction(action, { _client: { socketId: "s" } }), /no dashboard login/);
            assert.match(access.refuseAction(action, { _client: null }), /no dashboard login/);
            assert.strictEqual(access.refuseAction(action, as("operator")), null);
            assert.strictEqual(access.refuseAction(action, as("admin")), null);
            assert.strictEqual(access.refuseAction(action, {}), null, "the flow itself");
        }
        assert.strictEqual(access.refuseAction("list", as("viewer")), null);
        assert.strictEqual(access.refuseAction("show", as("viewer")), null);
    });

    it("the plugin puts the session's login on messages, never the browser's", function () {
        const conn = { data: { medsecUser: { username: "viewer", role: "viewer" } } };
        const forged = { payload: 1, _client: { user: { username: "admin", role: "admin" } } };
        assert.deepStrictEqual(stamp(conn, forged)._client, { user: { username: "viewer", role: "viewer" } });
        assert.deepStrictEqual(stamp({}, [{ a: 1 }])[0]._client, { user: null });
    });
});
