// Node-RED test flows around one medsec node: a gateway, the node, and a helper collecting output.
"use strict";

const helper = require("node-red-node-test-helper");
const { startBroker } = require("./broker");

const NODES = ["gateway", "vitals", "status", "alert", "devices", "history"].map((n) => require(`../../nodes/${n}.js`));

function flowWith(broker, node, gatewayProps = {}) {
    return [
        { id: "gw", type: "medsec-gateway", broker: broker ? broker.url : "mqtt://127.0.0.1:1", username: "dashboard", ...gatewayProps },
        { id: "n1", gateway: "gw", wires: [["out"]], ...node },
        { id: "out", type: "helper" },
    ];
}

// Load the flow; resolves {node, out, messages}: every message reaching the helper is collected.
async function load(broker, node, { credentials, gatewayProps } = {}) {
    const flow = flowWith(broker, node, gatewayProps);
    const creds = credentials || { gw: { password: broker ? broker.passwords.dashboard : "", token: "" } };
    await helper.load(NODES, flow, creds);
    const n1 = helper.getNode("n1");
    const out = helper.getNode("out");
    const messages = [];
    out.on("input", (msg) => messages.push(msg));
    return { node: n1, gateway: helper.getNode("gw"), out, messages };
}

// The hooks of a suite on one broker: the broker and a publishing client, made before the first
// test and stopped after the last; each test's flow unloaded after it. Returns {broker, pub},
// filled in once the suite starts.
function withBroker() {
    const suite = { broker: null, pub: null };
    before(async function () {
        suite.broker = await startBroker();
        suite.pub = await suite.broker.client("publisher");
    });
    after(async function () {
        suite.pub.end();
        await suite.broker.stop();
    });
    afterEach(async function () { await helper.unload(); });
    return suite;
}

module.exports = { helper, load, withBroker, NODES };
