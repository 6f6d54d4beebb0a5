// Shared by the input nodes (vitals, status, alert): find the gateway, show its connection in the
// node status, follow device topics, answer input and release everything on close.
"use strict";

const { validDeviceId, filterFor, parseTopic } = require("./topics");

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

// For the nodes that call the key-admin API (devices, history): the gateway, with "no gateway" in
// the node status when none is set; then each input fails with that error instead of calling.
function apiGatewayOf(RED, node, config) {
    const gateway = RED.nodes.getNode(config.gateway);
    if (!gateway) {
        node.status({ fill: "red", shape: "ring", text: "no gateway" });
    }
    return gateway;
}

// Registers the input handler of a key-admin API node: handle(msg, send, done) runs only with a
// gateway (from apiGatewayOf); without one, each input is done with the error.
function onApiInput(node, gateway, handle) {
    node.on("input", function (msg, send, done) {
        if (!gateway) {
            done(new Error("no medsec-gateway configured"));
            return;
        }
        return handle(msg, send, done);
    });
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

// Both settings of a vitals or status node: {gateway, device}, or null once the node shows why not.
function inputOf(RED, node, config) {
    const gateway = gatewayOf(RED, node, config);
    if (!gateway) {
        return null;
    }
    const device = deviceOf(node, config);
    if (device === null) {
        return null;
    }
    return { gateway, device };
}

// Follow one kind of message ("json", "status" or "alert") of the device filter; handle(parsed,
// payload, topic, packet) sees only well-formed Pico/<id>/<kind> topics. Returns the undo function.
function onTopic(gateway, kind, device, handle) {
    return gateway.subscribe(filterFor(kind, device), (topic, payload, packet) => {
        const parsed = parseTopic(topic);
        if (parsed) {
            handle(parsed, payload, topic, packet);
        }
    });
}

// Any input message is answered with a snapshot: msg.topic = topic, msg.payload = snapshot().
function answerInput(node, topic, snapshot) {
    node.on("input", function (msg, send, done) {
        msg.topic = topic;
        msg.payload = snapshot();
        send(msg);
        done();
    });
}

// On close (redeploy or removal): run every undo function and clear the node status.
function releaseOnClose(node, undo) {
    node.on("close", function (removed, done) {
        undo.forEach((fn) => fn());
        node.status({});
        done();
    });
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

module.exports = { gatewayOf, apiGatewayOf, onApiInput, deviceOf, inputOf, followConnection, onTopic, answerInput, releaseOnClose };
