// Point the medsec-gateway nodes' credentials at environment references (never a secret on disk):
// writes <userDir>/flows_cred.json unless it exists. Node-RED encrypts it with the credential
// secret the first time it saves the flows.
"use strict";
const fs = require("fs");
const path = require("path");

const dir = process.argv[2] || "/data";
const credPath = path.join(dir, "flows_cred.json");
if (!fs.existsSync(credPath)) {
    const flows = JSON.parse(fs.readFileSync(path.join(dir, "flows.json"), "utf8"));
    const creds = {};
    for (const node of flows) {
        if (node.type === "medsec-gateway") {
            creds[node.id] = { password: "${MEDSEC_NR_MQTT_PASSWORD}", token: "${MEDSEC_NR_READ_TOKEN}",
                manageToken: "${MEDSEC_NR_MANAGE_TOKEN}" };
        }
    }
    fs.writeFileSync(credPath, JSON.stringify(creds), { mode: 0o600 });
}
