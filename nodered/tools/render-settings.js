// Render Node-RED's settings for the medsec container from the one template the local stack uses
// (services/nodered/settings.js.tmpl), and Node-RED's own secrets.json from Docker secret files.
// Usage: node render-settings.js TEMPLATE USERDIR
// Environment: MEDSEC_SECRETS_DIR (default /run/secrets), MEDSEC_NR_MQTT_URL, MEDSEC_NR_ADMIN_URL,
// MEDSEC_NR_HOST (default 0.0.0.0), MEDSEC_NR_PORT (default 1880).
// Secret files: nodered_{viewer,operator,admin}_password (admin falls back to the older
// nodered_editor_password), mqtt_dashboard, admin_token, nodered_credential_secret.
"use strict";
const crypto = require("crypto");
const fs = require("fs");
const path = require("path");

const [template, userDir] = process.argv.slice(2);
if (!template || !userDir) {
    console.error("usage: render-settings.js TEMPLATE USERDIR");
    process.exit(2);
}
const secretsDir = process.env.MEDSEC_SECRETS_DIR || "/run/secrets";

function secret(...names) {
    for (const name of names) {
        const file = path.join(secretsDir, name);
        if (fs.existsSync(file)) {
            return fs.readFileSync(file, "utf8").trim();
        }
    }
    return null;
}

function sha256(text) {
    return crypto.createHash("sha256").update(text).digest("hex");
}

// The same substitution as services/nodered/runtime.py render(): @NAME@ -> JSON value.
function render(text, values) {
    for (const [key, value] of Object.entries(values)) {
        text = text.split(`@${key}@`).join(JSON.stringify(value));
    }
    return text;
}

function writePrivate(file, data) {
    const tmp = file + ".tmp";
    fs.writeFileSync(tmp, data, { mode: 0o600 });
    fs.chmodSync(tmp, 0o600);
    fs.renameSync(tmp, file);
}

const users = {};
for (const role of ["viewer", "operator", "admin"]) {
    const password = secret(`nodered_${role}_password`, ...(role === "admin" ? ["nodered_editor_password"] : []));
    if (password) {
        users[role] = { role, sha256: sha256(password) };
    }
}
if (!users.admin) {
    console.error(`no Node-RED admin password in ${secretsDir} (nodered_admin_password): refusing to start`);
    process.exit(2);
}
const credentialSecret = secret("nodered_credential_secret");
if (!credentialSecret) {
    console.error(`no nodered_credential_secret in ${secretsDir}: refusing to start`);
    process.exit(2);
}
const accessLib = require.resolve("node-red-contrib-medsec/nodes/lib/access.js",
    { paths: [process.cwd(), "/usr/src/node-red"] });
writePrivate(path.join(userDir, "secrets.json"), JSON.stringify({
    users,
    credentialSecret,
    mqttPassword: secret("mqtt_dashboard") || "",
    readToken: secret("nodered_read_token") || "",
    manageToken: secret("nodered_manage_token") || "",
}, null, 1));
writePrivate(path.join(userDir, "settings.js"), render(fs.readFileSync(template, "utf8"), {
    SECRETS_FILE: path.join(userDir, "secrets.json"),
    ACCESS_LIB: accessLib,
    MQTT_URL: process.env.MEDSEC_NR_MQTT_URL || "mqtt://emqx:1883",
    ADMIN_URL: process.env.MEDSEC_NR_ADMIN_URL || "http://keyadmin:8080/api/v1",
    HOST: process.env.MEDSEC_NR_HOST || "0.0.0.0",
    PORT: Number(process.env.MEDSEC_NR_PORT || 1880),
    USERDIR: userDir,
}));
console.log(`medsec: rendered ${path.join(userDir, "settings.js")} for logins ${Object.keys(users).join(", ")}`);
