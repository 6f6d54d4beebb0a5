// medsec vitals: one message per reading published on Pico/<id>/json, for every device or one.
"use strict";

const { filterFor, parseTopic, parseReading } = require("./lib/topics");
const { gatewayOf, deviceOf, followConnection } = require("./lib/attach");

module.exports = function (RED) {
    function MedsecVitalsNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        const gateway = gatewayOf(RED, node, config);
        if (!gateway) {
            return;
        }
        const device = deviceOf(node, config);
        if (device === null) {
            return;
        }
        const online = new Set();

        function render() {
            const text = device
                ? `${device}: ${online.has(device) ? "online" : "offline"}`
                : `${online.size} device${online.size === 1 ? "" : "s"} online`;
            node.status({ fill: online.size ? "green" : "grey", shape: "dot", text });
        }

        const undo = [];
        undo.push(followConnection(node, gateway, render));
        undo.push(gateway.subscribe(filterFor("status", device), (topic, payload) => {
            const parsed = parseTopic(topic);
            if (!parsed) {
                return;
            }
            if (payload.toString() === "online") {
                online.add(parsed.device);
            } else {
                online.delete(parsed.device);
            }
            if (gateway.connected) {
                render();
            }
        }));
        undo.push(gateway.subscribe(filterFor("json", device), (topic, payload) => {
            const parsed = parseTopic(topic);
            if (!parsed || parsed.kind !== "json") {
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

        node.on("close", function (removed, done) {
            undo.forEach((fn) => fn());
            node.status({});
            done();
        });
    }

    RED.nodes.registerType("medsec-vitals", MedsecVitalsNode);
};
