// medsec alert: watches readings, status and the gateway's own alerts (Pico/<id>/alert: a device
// on two connections at once), emits one "alert" message per episode and one
// "clear" when it ends (msg.topic = device id, msg.payload = the event).
"use strict";

const { validDeviceId } = require("./lib/topics");
const { gatewayOf, followConnection, onTopic, answerInput, releaseOnClose } = require("./lib/attach");
const { parseRules, AlertEngine } = require("./lib/rules");

module.exports = function (RED) {
    function MedsecAlertNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        const device = (config.device || "").trim();
        const gateway = gatewayOf(RED, node, config);
        if (!gateway) {
            return;
        }
        let rules;
        try {
            if (device && !validDeviceId(device)) {
                throw new Error(`device id ${JSON.stringify(device.slice(0, 70))} is not valid`);
            }
            rules = parseRules(config);
        } catch (err) {
            node.status({ fill: "red", shape: "ring", text: "bad settings" });
            node.error(err.message);
            return;
        }
        const engine = new AlertEngine(rules);
        const now = () => Date.now() / 1000;

        function render() {
            const n = engine.active().length;
            node.status(n ? { fill: "red", shape: "dot", text: `${n} active alert${n === 1 ? "" : "s"}` }
                : { fill: "green", shape: "dot", text: "no alerts" });
        }

        function emit(events) {
            if (!events.length) {
                return;
            }
            node.send([events.map((e) => ({ topic: e.device, payload: e }))]);
            render();
        }

        // A JSON message of one kind: handle(device, value); anything else reaches Catch nodes.
        function onJson(kind, what, handle) {
            return onTopic(gateway, kind, device, (parsed, payload, topic) => {
                let value;
                try {
                    value = JSON.parse(payload.toString());
                } catch (err) {
                    node.error(`bad ${what} on ${topic}: not JSON`, { topic: parsed.device });
                    return;
                }
                handle(parsed.device, value);
            });
        }

        const undo = [];
        undo.push(followConnection(node, gateway, render));
        undo.push(onJson("json", "reading", (id, reading) => emit(engine.reading(id, reading || {}, now()))));
        undo.push(onTopic(gateway, "status", device,
            (parsed, payload) => emit(engine.status(parsed.device, payload.toString(), now()))));
        undo.push(onJson("alert", "alert", (id, alert) => emit(engine.gateway(id, alert, now()))));
        if (rules.silentSeconds !== null) {
            const every = Math.min(1000, Math.max(50, (rules.silentSeconds * 1000) / 5));
            const timer = setInterval(() => emit(engine.tick(now())), every);
            undo.push(() => clearInterval(timer));
        }

        // Any input message asks for the alerts open now.
        answerInput(node, "active", () => engine.active());
        releaseOnClose(node, undo);
    }

    RED.nodes.registerType("medsec-alert", MedsecAlertNode);
};
