// Shared by the input nodes: find the gateway, show its connection in the node status.
"use strict";

const { validDeviceId } = require("./topics");

// Returns the gateway node, or null after marking the node as unconfigured.
function gatewayOf(RED, node, config) {
    const gateway = RED.nodes.getNode(config.gateway);
    if (!gateway) {
        node.status({ fill: "red", shape: "ring", text: "no gateway" });
        node.error("no medsec-gateway configured");
        return null;
    }
    return gateway;
}

// The node's device filter ("" = every device), or null after marking the node as misconfigured.
function deviceOf(node, config) {
    const device = (config.device || "").trim();
    if (device && !validDeviceId(device)) {
        node.status({ fill: "red", shape: "ring", text: "bad device id" });
        node.error(`device id ${JSON.stringify(device.slice(0, 70))} is not valid (1-64 of A-Z a-z 0-9 _ . -)`);
        return null;
    }
    return device;
}

// Show "disconnected" / "error" while the broker is away; fn() renders the connected status.
function followConnection(node, gateway, connectedStatus) {
    return gateway.watch((state, detail) => {
        if (state === "connected") {
            connectedStatus();
        } else if (state === "error") {
            node.status({ fill: "red", shape: "ring", text: detail ? `error: ${detail}`.slice(0, 40) : "error" });
        } else {
            node.status({ fill: "red", shape: "ring", text: "disconnected" });
        }
    });
}

module.exports = { gatewayOf, deviceOf, followConnection };
