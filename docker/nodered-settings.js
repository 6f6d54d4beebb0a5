// Node-RED settings for the medsec container: the editor, the admin API and the dashboard need
// the `admin` login (password from a Docker secret, bcrypt-hashed here at start; no default),
// flow credentials are encrypted with a generated secret. Same rules as the local stack's
// settings (services/nodered/settings.js.tmpl).
"use strict";
const crypto = require("crypto");

function bcrypt() {
    for (const p of ["bcryptjs", "/usr/src/node-red/node_modules/bcryptjs",
                     "/usr/src/node-red/node_modules/@node-red/editor-api/node_modules/bcryptjs"]) {
        try { return require(p); } catch (e) { /* try the next place */ }
    }
    throw new Error("bcryptjs not found: cannot protect the editor");
}

const password = process.env.MEDSEC_EDITOR_PASSWORD;
if (!password) {
    throw new Error("MEDSEC_EDITOR_PASSWORD is not set: refusing to start an editor without a login");
}
const hash = bcrypt().hashSync(password, 10);

function digest(text) {
    return crypto.createHash("sha256").update(String(text)).digest();
}

// The dashboard's socket.io is not covered by httpNodeAuth: check HTTP Basic there too.
function basicAuthOk(header) {
    const m = /^Basic\s+([A-Za-z0-9+/=]+)$/.exec(header || "");
    if (!m) {
        return false;
    }
    const text = Buffer.from(m[1], "base64").toString("utf8");
    const colon = text.indexOf(":");
    return colon > 0 && text.slice(0, colon) === "admin" &&
        crypto.timingSafeEqual(digest(text.slice(colon + 1)), digest(password));
}

module.exports = {
    uiPort: 1880,
    userDir: "/data",
    flowFile: "flows.json",
    credentialSecret: process.env.NODE_RED_CREDENTIAL_SECRET,
    adminAuth: {
        type: "credentials",
        users: [{ username: "admin", password: hash, permissions: "*" }],
    },
    // The dashboard shows patients' vitals and administers devices: same login.
    httpNodeAuth: { user: "admin", pass: hash },
    dashboard: {
        ioMiddleware: function (socket, next) {
            if (!basicAuthOk(socket.client.conn.request.headers.authorization)) {
                next(new Error("unauthorized"));
                return;
            }
            next();
        },
    },
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false, updateNotification: false },
    functionExternalModules: false,
    externalModules: { autoInstall: false },
    editorTheme: { projects: { enabled: false }, tours: false },
    logging: { console: { level: "info", metrics: false, audit: false } },
    contextStorage: { default: { module: "memory" } },
};
