// medsec unseal: a sealed envelope (Buffer) -> msg.payload (JSON, text or Buffer) and msg.envelope
// {kind, sender, recipient, ts, nonce}. Rejects, each with its reason in err.reason (reaches Catch
// nodes): malformed, wrong_recipient, unknown_sender, bad_signature, stale, replay, undecryptable.
"use strict";

const envelope = require("./lib/envelope");

module.exports = function (RED) {
    function MedsecUnsealNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        const me = (config.me || "").trim();
        const sender = (config.sender || "").trim();
        const output = config.output || "json";
        const window = Number(config.window) > 0 ? Number(config.window) : envelope.DEFAULT_WINDOW;
        let opener;
        try {
            if (!envelope.ID_RE.test(me) || !envelope.ID_RE.test(sender)) {
                throw new Error("this node's id and the sender's id must be 1-64 [A-Za-z0-9_.-]");
            }
            const senderKey = envelope.loadKey(config.senderKey || "", false, "the sender's public key");
            const myKey = envelope.loadKey((node.credentials || {}).privateKey || "", true, "the private key");
            opener = new envelope.Opener(me, myKey, (id) => (id === sender ? senderKey : null), { window });
        } catch (err) {
            node.status({ fill: "red", shape: "ring", text: "bad settings" });
            node.error(`medsec unseal: ${err.message}`);
            return;
        }
        node.status({ fill: "grey", shape: "ring", text: `${sender} → ${me}` });
        let rejected = 0;

        node.on("input", function (msg, send, done) {
            let opened;
            try {
                if (!Buffer.isBuffer(msg.payload)) {
                    throw new envelope.EnvelopeError("malformed",
                        "payload is not a Buffer (set the MQTT in node's output to 'a Buffer')");
                }
                opened = opener.open(msg.payload);
            } catch (err) {
                rejected += 1;
                node.status({ fill: "red", shape: "ring", text: `rejected: ${err.reason || "error"} (${rejected})` });
                msg.error = { reason: err.reason || "error" };
                done(err);
                return;
            }
            const env = opened.envelope;
            let payload = opened.payload;
            if (output === "json") {
                try {
                    payload = JSON.parse(payload.toString("utf8"));
                } catch (err) {
                    done(new Error("medsec unseal: the payload is not JSON (choose text or Buffer output)"));
                    return;
                }
            } else if (output === "utf8") {
                payload = payload.toString("utf8");
            }
            msg.payload = payload;
            msg.envelope = { kind: env.kind, sender: env.sender, recipient: env.recipient, ts: env.ts,
                nonce: env.nonce.toString("hex") };
            node.status({ fill: "green", shape: "dot", text: `${env.kind} from ${env.sender}` });
            send(msg);
            done();
        });
    }

    RED.nodes.registerType("medsec-unseal", MedsecUnsealNode, {
        credentials: { privateKey: { type: "password" } },
    });
};
