// Node-RED settings for the medsec container: the editor needs a login (password from a
// Docker secret, hashed here at start; no default), credentials in flows are encrypted
// with a generated secret, and the dashboard is served at /dashboard.
const path = require("path");

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

module.exports = {
    uiPort: 1880,
    flowFile: "flows.json",
    userDir: "/data",
    credentialSecret: process.env.NODE_RED_CREDENTIAL_SECRET,
    adminAuth: {
        type: "credentials",
        users: [{ username: "admin", password: bcrypt().hashSync(password, 10), permissions: "*" }],
    },
    diagnostics: { enabled: false },
    editorTheme: { projects: { enabled: false } },
    logging: { console: { level: "info", metrics: false, audit: false } },
    functionExternalModules: false,
    contextStorage: { default: { module: "memory" } },
    nodesDir: path.join("/data", "nodes"),
};
