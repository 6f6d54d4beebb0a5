// Shared by the input nodes: find the gateway, show its connection in the node status.
"use strict";

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

module.exports = { gatewayOf, followConnection };
