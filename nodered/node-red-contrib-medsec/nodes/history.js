// medsec history: a device's stored readings for a time range, from the key-admin API (read token).
// msg.payload: a device id or {device, from, to, span, step}; out: msg.payload = the readings.
"use strict";

const { apiGatewayOf, onApiInput } = require("./lib/attach");
const { query, path } = require("./lib/history");

const MAX_ITEMS_DEFAULT = 100000;

module.exports = function (RED) {
    function MedsecHistoryNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        const gateway = apiGatewayOf(RED, node, config);
        const defaults = { device: config.device || "", step: config.step || "raw", span: config.span || "1h" };
        const maxItems = Number(config.maxItems) > 0 ? Number(config.maxItems) : MAX_ITEMS_DEFAULT;

        onApiInput(node, gateway, async function (msg, send, done) {
            let q;
            try {
                q = query(msg, defaults, Date.now() / 1000);
            } catch (err) {
                node.status({ fill: "red", shape: "ring", text: "bad input" });
                done(err);
                return;
            }
            node.status({ fill: "blue", shape: "dot", text: `${q.device}...` });
            try {
                // Follow the pages (each a GET: the gateway's read token) up to maxItems.
                const items = [];
                let cursor = null;
                let truncated = false;
                do {
                    const res = await gateway.admin("GET", path(q, cursor));
                    items.push(...res.body.items);
                    cursor = res.body.next;
                    msg.statusCode = res.status;
                    if (cursor && items.length >= maxItems) {
                        truncated = true;
                        break;
                    }
                } while (cursor);
                msg.payload = items;
                msg.device = q.device;
                msg.from = q.from;
                msg.to = q.to;
                msg.step = q.step;
                msg.truncated = truncated;
                node.status({ fill: "green", shape: "dot", text: `${q.device}: ${items.length}${truncated ? "+" : ""}` });
                send(msg);
                done();
            } catch (err) {
                msg.statusCode = err.statusCode;
                node.status({ fill: "red", shape: "ring", text: `${q.device}: ${err.statusCode || "failed"}` });
                done(err);
            }
        });

        node.on("close", function (removed, done) {
            node.status({});
            done();
        });
    }

    RED.nodes.registerType("medsec-history", MedsecHistoryNode);
};
