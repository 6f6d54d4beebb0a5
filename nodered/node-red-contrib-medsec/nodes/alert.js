// medsec alert: watches readings, status and the gateway's own alerts (Pico/<id>/alert: a device
// on two connections at once), emits one "alert" message per episode and one
// "clear" when it ends (msg.topic = device id, msg.payload = the event).
"use strict";

const { filterFor, parseTopic, validDeviceId } = require("./lib/topics");
const { gatewayOf, followConnection } = require("./lib/attach");
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

        const undo = [];
        undo.push(followConnection(node, gateway, render));
        undo.push(gateway.subscribe(filterFor("json", device), (topic, payload) => {
            const parsed = parseTopic(topic);
            if (!parsed) {
                return;
            }
            let reading;
            try {
                reading = JSON.parse(payload.toString());
            } catch (err) {
                node.error(`bad reading on ${topic}: not JSON`, { topic: parsed.device });
                return;
            }
            emit(engine.reading(parsed.device, reading || {}, now()));
        }));
        undo.push(gateway.subscribe(filterFor("status", device), (topic, payload) => {
            const parsed = parseTopic(topic);
            if (parsed) {
                emit(engine.status(parsed.device, payload.toString(), now()));
            }
        }));
        undo.push(gateway.subscribe(filterFor("alert", device), (topic, payload) => {
            const parsed = parseTopic(topic);
            if (!parsed) {
                return;
            }
            let alert;
            try {
                alert = JSON.parse(payload.toString());
            } catch (err) {
                node.error(`bad alert on ${topic}: not JSON`, { topic: parsed.device });
                return;
            }
            emit(engine.gateway(parsed.device, alert, now()));
        }));
        if (rules.silentSeconds !== null) {
            const every = Math.min(1000, Math.max(50, (rules.silentSeconds * 1000) / 5));
            const timer = setInterval(() => emit(engine.tick(now())), every);
            undo.push(() => clearInterval(timer));
        }

        // Any input message asks for the alerts open now.
        node.on("input", function (msg, send, done) {
            msg.topic = "active";
            msg.payload = engine.active();
            send(msg);
            done();
        });

        node.on("close", function (removed, done) {
            undo.forEach((fn) => fn());
            node.status({});
            done();
        });
    }

    RED.nodes.registerType("medsec-alert", MedsecAlertNode);
};
