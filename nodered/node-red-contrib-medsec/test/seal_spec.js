"use strict";

// The JS envelope codec against the Python vectors (tests/vectors/envelope.json), and the
// medsec seal / unseal nodes in a flow.
const assert = require("assert");
const crypto = require("crypto");
const path = require("path");
const helper = require("node-red-node-test-helper");
const envelope = require("../nodes/lib/envelope");
const sealNode = require("../nodes/seal.js");
const { waitUntil } = require("./support/broker");
const unsealNode = require("../nodes/unseal.js");

helper.init(require.resolve("node-red"));

const vectors = require(path.join(__dirname, "..", "..", "..", "tests", "vectors", "envelope.json"));
const keys = vectors.keys;
const pub = (name) => crypto.createPublicKey(keys[name]).export({ type: "spki", format: "pem" });

function opener(now) {
    const spec = vectors.open_as;
    return new envelope.Opener(spec.recipient, keys[spec.recipient],
        (s) => (spec.known_senders.includes(s) ? pub(s) : null),
        { window: spec.window, clock: () => (now === undefined ? spec.now : now) });
}

describe("medsec envelope (lib) against the Python vectors", function () {
    for (const c of vectors.cases) {
        it(`${c.name}: ${c.expect}`, function () {
            const data = Buffer.from(c.envelope, "hex");
            if (c.expect === "ok") {
                assert.strictEqual(opener().open(data).payload.toString("hex"), c.payload);
            } else {
                assert.throws(() => opener().open(data), (err) => err.reason === c.expect);
            }
        });
    }

    it("a replayed nonce is rejected", function () {
        const o = opener();
        const data = Buffer.from(vectors.cases[0].envelope, "hex");
        o.open(data);
        assert.throws(() => o.open(data), (err) => err.reason === "replay");
    });

    it("seals the same bytes as Python from the same inputs (all but the randomised RSA parts)", function () {
        const c = vectors.cases[0];
        const s = c.seal;
        const data = envelope.seal(Buffer.from(c.payload, "hex"), {
            kind: s.kind, sender: s.sender, recipient: s.recipient, senderKey: keys[s.sender],
            recipientKey: pub(s.recipient), now: s.now, nonce: Buffer.from(s.nonce, "hex"),
            aesKey: Buffer.from(s.aes_key, "hex"), iv: Buffer.from(s.iv, "hex"),
        });
        const env = envelope.parse(data);
        const expectedAad = Buffer.from(s.aad, "hex");
        const fixed = 4 + 8 + 16 + 1 + s.kind.length + 1 + s.sender.length + 1 + s.recipient.length + 2;
        assert.ok(env.aad.subarray(0, fixed).equals(expectedAad.subarray(0, fixed)), "header up to the wrapped key");
        assert.ok(env.iv.equals(Buffer.from(s.iv, "hex")));
        // GCM's ciphertext does not depend on the AAD: byte-identical to Python's.
        assert.strictEqual(env.ciphertext.toString("hex"), s.ciphertext);
        assert.strictEqual(opener().open(data).payload.toString("hex"), c.payload);
    });

    it("a JS-sealed 10 MB payload opens, and the bounded nonce cache keeps refusing evicted nonces", function () {
        const big = crypto.randomBytes(10 * 1024 * 1024);
        const data = envelope.seal(big, { kind: "params", sender: "dispatch", recipient: "s1",
            senderKey: keys.dispatch, recipientKey: pub("s1") });
        assert.ok(opener(Date.now() / 1000).open(data).payload.equals(big));
        const cache = new envelope.NonceCache(120, 2);
        for (let i = 0; i < 4; i++) {
            cache.checkAndAdd("s1", Buffer.alloc(16, i), 1000000 + i, 1000);
        }
        assert.strictEqual(cache.size, 2);
        assert.throws(() => cache.checkAndAdd("s1", Buffer.alloc(16, 0), 1000000, 1000), (e) => e.reason === "replay");
    });
});

describe("medsec seal and unseal nodes", function () {
    afterEach(async function () { await helper.unload(); });

    function flow(unsealProps = {}) {
        return [
            { id: "seal", type: "medsec-seal", sender: "s1", recipient: "dispatch", kind: "result",
                topic: "medsec/dispatch/station-s1/result", recipientKey: pub("dispatch"), wires: [["sealed", "unseal"]] },
            { id: "unseal", type: "medsec-unseal", me: "dispatch", sender: "s1", senderKey: pub("s1"),
                window: "120", output: "json", wires: [["out"]], ...unsealProps },
            { id: "sealed", type: "helper" },
            { id: "out", type: "helper" },
        ];
    }
    const creds = { seal: { privateKey: keys.s1 }, unseal: { privateKey: keys.dispatch } };

    it("round-trips a message: sealed on the wire, opened with its envelope fields", async function () {
        await helper.load([sealNode, unsealNode], flow(), creds);
        const sealed = new Promise((resolve) => helper.getNode("sealed").on("input", resolve));
        const opened = new Promise((resolve) => helper.getNode("out").on("input", resolve));
        helper.getNode("seal").receive({ payload: { station: "s1", set: 0, result: { result: 100 } } });
        const wire = await sealed;
        assert.strictEqual(wire.topic, "medsec/dispatch/station-s1/result");
        assert.ok(Buffer.isBuffer(wire.payload));
        assert.ok(!wire.payload.includes(Buffer.from("result\":{")), "nothing readable on the wire");
        const msg = await opened;
        assert.deepStrictEqual(msg.payload, { station: "s1", set: 0, result: { result: 100 } });
        assert.strictEqual(msg.envelope.kind, "result");
        assert.strictEqual(msg.envelope.sender, "s1");
    });

    it("rejects a flipped bit, a replay and a wrong recipient, each with its reason", async function () {
        await helper.load([sealNode, unsealNode], [flow()[1], { id: "out", type: "helper" }], creds);
        const unseal = helper.getNode("unseal");
        const errors = [];
        unseal.on("call:error", (call) => errors.push(call.args[1] && call.args[1].error && call.args[1].error.reason));
        const good = envelope.seal(Buffer.from("{}"), { kind: "result", sender: "s1", recipient: "dispatch",
            senderKey: keys.s1, recipientKey: pub("dispatch") });
        const flipped = Buffer.from(good);
        flipped[flipped.length - 500] ^= 1;
        const other = envelope.seal(Buffer.from("{}"), { kind: "result", sender: "s1", recipient: "s2",
            senderKey: keys.s1, recipientKey: pub("s2") });
        const outs = [];
        helper.getNode("out").on("input", (m) => outs.push(m));
        for (const payload of [flipped, good, good, other, "text"]) {
            unseal.receive({ payload });
        }
        await waitUntil(() => outs.length + errors.length === 5, 5000, "five answers");
        assert.strictEqual(outs.length, 1, "only the genuine envelope, once");
        assert.deepStrictEqual(errors, ["bad_signature", "replay", "wrong_recipient", "malformed"]);
    });

    it("refuses to start without a proper key and says so without echoing it", async function () {
        await helper.load([sealNode, unsealNode], [{ id: "seal", type: "medsec-seal", sender: "s1",
            recipient: "dispatch", recipientKey: "not a key", wires: [] }], { seal: { privateKey: keys.s1 } });
        const logged = helper.log().args.map((a) => a[0]).filter((e) => e && e.level === helper.log().ERROR);
        const text = logged.map((e) => String(e.msg)).join("\n");
        assert.match(text, /recipient's public key is missing or not a PEM RSA key/);
        assert.ok(!text.includes("not a key") && !text.includes("PRIVATE"), "no key material in the log");
    });
});
