// medsec devices: list, show, add, rotate and revoke devices through the key-admin API.
// msg.action (or the node's setting) picks the operation; msg.payload carries the device.
"use strict";

const { apiGatewayOf, onApiInput } = require("./lib/attach");
const { request } = require("./lib/adminapi");
const { refuseAction } = require("./lib/access");

module.exports = function (RED) {
    function MedsecDevicesNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        const gateway = apiGatewayOf(RED, node, config);
        const defaultAction = config.action || "list";

        onApiInput(node, gateway, async function (msg, send, done) {
            const action = msg.action || defaultAction;
            // A dashboard session may change devices only with an operator's or admin's login.
            const refused = refuseAction(action, msg);
            if (refused) {
                msg.statusCode = 403;
                node.status({ fill: "red", shape: "ring", text: `${action}: refused` });
                node.warn(refused);
                done(new Error(refused));
                return;
            }
            let req;
            try {
                req = request(action, msg.payload);
            } catch (err) {
                node.status({ fill: "red", shape: "ring", text: `${action}: bad input` });
                done(err);
                return;
            }
            node.status({ fill: "blue", shape: "dot", text: `${action}...` });
            try {
                const res = await gateway.admin(req.method, req.path, req.body);
                msg.action = action;
                msg.statusCode = res.status;
                msg.payload = res.body;
                node.status({ fill: "green", shape: "dot", text: `${action}: ${res.status}` });
                send(msg);
                done();
            } catch (err) {
                msg.statusCode = err.statusCode;
                node.status({ fill: "red", shape: "ring", text: `${action}: ${err.statusCode || "failed"}` });
                done(err);
            }
        });

        node.on("close", function (removed, done) {
            node.status({});
            done();
        });
    }

    RED.nodes.registerType("medsec-devices", MedsecDevicesNode);
};
