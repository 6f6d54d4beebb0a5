// medsec seal: msg.payload (Buffer, string or object as JSON) -> a sealed envelope (Buffer) for one
// recipient, signed with this node's private key (docs/envelope.md). The private key is a credential,
// never part of the flow; the recipient's public key is a setting.
"use strict";

const envelope = require("./lib/envelope");

module.exports = function (RED) {
    function MedsecSealNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        const sender = (config.sender || "").trim();
        const recipient = (config.recipient || "").trim();
        const kind = (config.kind || "").trim() || "result";
        const topic = (config.topic || "").trim();
        let senderKey;
        let recipientKey;
        try {
            if (!envelope.ID_RE.test(sender) || !envelope.ID_RE.test(recipient)) {
                throw new Error("sender and recipient must be ids of 1-64 [A-Za-z0-9_.-]");
            }
            senderKey = envelope.loadKey((node.credentials || {}).privateKey || "", true, "the private key");
            recipientKey = envelope.loadKey(config.recipientKey || "", false, "the recipient's public key");
        } catch (err) {
            node.status({ fill: "red", shape: "ring", text: "bad settings" });
            node.error(`medsec seal: ${err.message}`);
            return;
        }
        node.status({ fill: "grey", shape: "ring", text: `${sender} → ${recipient}` });

        node.on("input", function (msg, send, done) {
            try {
                let body = msg.payload;
                if (typeof body === "string") {
                    body = Buffer.from(body, "utf8");
                } else if (!Buffer.isBuffer(body)) {
                    body = Buffer.from(JSON.stringify(body === undefined ? null : body), "utf8");
                }
                const msgKind = typeof msg.kind === "string" && envelope.ID_RE.test(msg.kind) ? msg.kind : kind;
                msg.payload = envelope.seal(body, { kind: msgKind, sender, recipient, senderKey, recipientKey });
                if (topic) {
                    msg.topic = topic;
                }
                node.status({ fill: "green", shape: "dot", text: `sealed ${msgKind}, ${msg.payload.length} bytes` });
                send(msg);
                done();
            } catch (err) {
                node.status({ fill: "red", shape: "ring", text: "seal failed" });
                done(err);
            }
        });
    }

    RED.nodes.registerType("medsec-seal", MedsecSealNode, {
        credentials: { privateKey: { type: "password" } },
    });
};
