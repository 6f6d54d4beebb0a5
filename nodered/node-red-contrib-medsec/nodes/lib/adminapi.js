// The key-admin API calls behind the medsec devices node. Pure: action + payload in, request out.
"use strict";

const { validDeviceId } = require("./topics");

const ACTIONS = ["list", "show", "add", "rotate", "revoke"];

// What to call for an action and a payload; throws a clear error for bad input. Pure.
function request(action, payload) {
    if (!ACTIONS.includes(action)) {
        throw new Error(`unknown action ${JSON.stringify(String(action).slice(0, 20))}; one of ${ACTIONS.join(", ")}`);
    }
    if (action === "list") {
        return { method: "GET", path: "/devices" };
    }
    const body = typeof payload === "string" ? { id: payload } : payload && typeof payload === "object" ? payload : {};
    const id = body.id;
    if (!validDeviceId(id)) {
        throw new Error(`${action} needs a device id (1-64 of A-Z a-z 0-9 _ . -) in msg.payload or msg.payload.id`);
    }
    const path = `/devices/${encodeURIComponent(id)}`;
    switch (action) {
    case "show":
        return { method: "GET", path };
    case "rotate":
        return { method: "POST", path: `${path}/rotate` };
    case "revoke":
        return { method: "DELETE", path };
    default: {
        const add = { id, protocol: body.protocol || "v2" };
        for (const field of ["key", "iv"]) {
            if (body[field] !== undefined && body[field] !== "") {
                add[field] = body[field];
            }
        }
        return { method: "POST", path: "/devices", body: add };
    }
    }
}

module.exports = { ACTIONS, request };
