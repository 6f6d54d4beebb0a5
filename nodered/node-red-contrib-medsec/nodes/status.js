// medsec status: online/offline changes (retained Pico/<id>/status) and last-seen per device.
// Any input message asks for a snapshot of the whole fleet.
"use strict";

const { inputOf, followConnection, onTopic, answerInput, releaseOnClose } = require("./lib/attach");

module.exports = function (RED) {
    function MedsecStatusNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        const settings = inputOf(RED, node, config);
        if (!settings) {
            return;
        }
        const { gateway, device } = settings;
        // device -> {device, status: "online"|"offline", online, lastSeen (unix s|null), since (unix s)}
        const fleet = new Map();

        function entry(id) {
            let e = fleet.get(id);
            if (!e) {
                e = { device: id, status: "unknown", online: false, lastSeen: null, since: null, protocol: null };
                fleet.set(id, e);
            }
            return e;
        }

        function render() {
            const total = fleet.size;
            const up = [...fleet.values()].filter((e) => e.online).length;
            node.status({ fill: up ? "green" : "grey", shape: "dot", text: `${up} online / ${total}` });
        }

        const undo = [];
        undo.push(followConnection(node, gateway, render));
        undo.push(onTopic(gateway, "status", device, (parsed, payload, topic, packet) => {
            const text = payload.toString();
            if (text !== "online" && text !== "offline") {
                node.error(`unexpected status ${JSON.stringify(text.slice(0, 20))} on ${topic}`, { topic: parsed.device });
                return;
            }
            const e = entry(parsed.device);
            if (e.status === text) {
                return; // a replay of what we already know: not a change
            }
            e.status = text;
            e.online = text === "online";
            e.since = Date.now() / 1000;
            render();
            node.send({ topic: parsed.device, payload: { ...e, retained: Boolean(packet && packet.retain) } });
        }));
        undo.push(onTopic(gateway, "json", device, (parsed, payload) => {
            const e = entry(parsed.device);
            let ts = null;
            try {
                const reading = JSON.parse(payload.toString());
                ts = typeof reading.ts === "number" ? reading.ts : null;
                e.protocol = reading.protocol || e.protocol;
            } catch (err) {
                ts = null;
            }
            e.lastSeen = ts || Date.now() / 1000;
        }));

        answerInput(node, "fleet",
            () => [...fleet.values()].sort((a, b) => a.device.localeCompare(b.device)).map((e) => ({ ...e })));
        releaseOnClose(node, undo);
    }

    RED.nodes.registerType("medsec-status", MedsecStatusNode);
};
