"""The Node-RED codec (nodes/lib/envelope.js) seals envelopes the Python side opens, and the reverse."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from services.common import envelope as E

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "nodered" / "node-red-contrib-medsec" / "nodes" / "lib" / "envelope.js"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None or not LIB.exists(), reason="needs node and nodered/")

SCRIPT = """
const E = require(process.argv[1]);
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
if (input.op === "seal") {
    const out = E.seal(Buffer.from(input.payload, "hex"), { kind: input.kind, sender: input.sender,
        recipient: input.recipient, senderKey: input.senderKey, recipientKey: input.recipientKey });
    process.stdout.write(out.toString("hex"));
} else {
    const o = new E.Opener(input.me, input.myKey, (s) => s === input.sender ? input.senderKey : null);
    let answer;
    try { answer = { payload: o.open(Buffer.from(input.envelope, "hex")).payload.toString("hex") }; }
    catch (e) { answer = { reason: e.reason }; }
    process.stdout.write(JSON.stringify(answer));
}
"""


def node(doc: dict) -> str:
    done = subprocess.run([NODE, "-e", SCRIPT, str(LIB)], input=json.dumps(doc), capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stdout


def test_js_sealed_envelope_opens_in_python(keys):
    payload = json.dumps({"station": "s1", "set": 1, "result": {"result": 99.5}}).encode()
    sealed = bytes.fromhex(node({
        "op": "seal", "payload": payload.hex(), "kind": "result", "sender": "s1", "recipient": "dispatch",
        "senderKey": E.private_pem(keys["s1"]).decode(), "recipientKey": E.public_pem(keys["dispatch"]),
    }))
    env, out = E.Opener("dispatch", keys["dispatch"], lambda s: keys["s1"].public_key() if s == "s1" else None
                        ).open(sealed)
    assert out == payload and (env.kind, env.sender, env.recipient) == ("result", "s1", "dispatch")


def test_python_sealed_envelope_opens_in_js_and_a_tampered_one_does_not(keys):
    payload = b"\x00\x01 binary \xff" * 1000
    sealed = E.seal(payload, kind="params", sender="dispatch", recipient="s2",
                    sender_key=keys["dispatch"], recipient_key=keys["s2"])
    common = {"op": "open", "me": "s2", "myKey": E.private_pem(keys["s2"]).decode(), "sender": "dispatch",
              "senderKey": E.public_pem(keys["dispatch"])}
    assert json.loads(node({**common, "envelope": sealed.hex()})) == {"payload": payload.hex()}
    bad = bytearray(sealed)
    bad[-1] ^= 1
    assert json.loads(node({**common, "envelope": bytes(bad).hex()})) == {"reason": "bad_signature"}
