// medsec vitals: one message per reading published on Pico/<id>/json, for every device or one.
"use strict";

const { parseReading } = require("./lib/topics");
const { inputOf, followConnection, onTopic, releaseOnClose } = require("./lib/attach");

module.exports = function (RED) {
    function MedsecVitalsNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        const settings = inputOf(RED, node, config);
        if (!settings) {
            return;
        }
        const { gateway, device } = settings;
        const online = new Set();

        function render() {
            const text = device
                ? `${device}: ${online.has(device) ? "online" : "offline"}`
                : `${online.size} device${online.size === 1 ? "" : "s"} online`;
            node.status({ fill: online.size ? "green" : "grey", shape: "dot", text });
        }

        const undo = [];
        undo.push(followConnection(node, gateway, render));
        undo.push(onTopic(gateway, "status", device, (parsed, payload) => {
            if (payload.toString() === "online") {
                online.add(parsed.device);
            } else {
                online.delete(parsed.device);
            }
            if (gateway.connected) {
                render();
            }
        }));
        undo.push(onTopic(gateway, "json", device, (parsed, payload, topic) => {
            if (parsed.kind !== "json") {
                return;
            }
            const msg = { topic: parsed.device };
            try {
                msg.payload = parseReading(parsed.device, payload);
            } catch (err) {
                // Reaches Catch nodes; the rest of the fleet keeps flowing.
                node.error(`bad reading on ${topic}: ${err.message}`, msg);
                return;
            }
            node.send(msg);
        }));

        releaseOnClose(node, undo);
    }

    RED.nodes.registerType("medsec-vitals", MedsecVitalsNode);
};
