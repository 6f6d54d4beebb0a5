// A real Mosquitto for the node tests, with medsec's own generated config (accounts, passwords,
// ACL) on a free port. The project's Python generator writes the files, as in production.
"use strict";

const { spawn, execFileSync } = require("child_process");
const fs = require("fs");
const net = require("net");
const os = require("os");
const path = require("path");
const mqtt = require("mqtt");

const ROOT = path.resolve(__dirname, "..", "..", "..", "..");
const PYTHON = process.env.MEDSEC_PYTHON || path.join(ROOT, ".venv", "bin", "python");
const MOSQUITTO = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"].find((p) => fs.existsSync(p)) || "mosquitto";

const GENERATE = `
import json
from services.common.config import Config
from services.common.state import init_state, load_passwords
from services.broker.mosquitto import write_broker_files
config = Config.from_env()
init_state(config)
print(json.dumps({"conf": str(write_broker_files(config)), "passwords": load_passwords(config)}))
`;

function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.unref();
        srv.on("error", reject);
        srv.listen(0, "127.0.0.1", () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

function portOpen(port) {
    return new Promise((resolve) => {
        const sock = net.connect(port, "127.0.0.1");
        sock.once("connect", () => { sock.destroy(); resolve(true); });
        sock.once("error", () => resolve(false));
    });
}

// Poll cond() until it is truthy (never a fixed sleep); rejects naming what it waited for.
async function waitUntil(cond, timeoutMs = 5000, what = "condition") {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const value = await cond();
        if (value) {
            return value;
        }
        if (Date.now() > deadline) {
            throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        }
        await new Promise((r) => setTimeout(r, 20));
    }
}

async function startBroker() {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), "medsec-node-test-"));
    const port = await freePort();
    const env = { ...process.env, MEDSEC_HOME: home, MEDSEC_MQTT_PORT: String(port) };
    const out = execFileSync(PYTHON, ["-c", GENERATE], { cwd: ROOT, env, encoding: "utf8" });
    const { conf, passwords } = JSON.parse(out);
    let proc = null;
    async function launch() {
        proc = spawn(MOSQUITTO, ["-c", conf], { stdio: ["ignore", "ignore", "pipe"] });
        let log = "";
        proc.stderr.on("data", (d) => { log += d; });
        await waitUntil(() => portOpen(port) || proc.exitCode !== null, 10000, "mosquitto to listen");
        if (proc.exitCode !== null) {
            throw new Error(`mosquitto exited: ${log}`);
        }
    }
    async function halt() {
        if (proc && proc.exitCode === null) {
            const exited = new Promise((r) => proc.once("exit", r));
            proc.kill("SIGTERM");
            await exited;
        }
    }
    await launch();
    const url = `mqtt://127.0.0.1:${port}`;
    return {
        url,
        port,
        passwords,
        // A client of the given account, connected.
        async client(account) {
            const c = mqtt.connect(url, { username: account, password: passwords[account], reconnectPeriod: 0 });
            await new Promise((resolve, reject) => { c.once("connect", resolve); c.once("error", reject); });
            return c;
        },
        // Stop the broker, keeping its files: start() brings it back on the same port.
        halt,
        start: launch,
        async stop() {
            await halt();
            fs.rmSync(home, { recursive: true, force: true });
        },
    };
}

function publish(client, topic, payload, opts = {}) {
    return new Promise((resolve, reject) => {
        const body = typeof payload === "string" || Buffer.isBuffer(payload) ? payload : JSON.stringify(payload);
        client.publish(topic, body, { qos: 1, ...opts }, (err) => (err ? reject(err) : resolve()));
    });
}

let counter = 0;
// A device id unique to this run and test: retained status of other tests never interferes.
function deviceId(name) {
    counter += 1;
    return `t${process.pid}-${counter}-${name}`.slice(0, 64);
}

function reading(device, fields = {}) {
    return {
        device, ts: Date.now() / 1000, seq: null, protocol: "v2",
        Temp: 36.6, TempMcu: 23.7, PulseSig: 1.5, Acel_x: 0, Acel_y: 0, Acel_z: 1, TempMpu: 23.4,
        ...fields,
    };
}

module.exports = { startBroker, publish, waitUntil, deviceId, reading, freePort };
