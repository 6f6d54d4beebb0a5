// medsec-gateway: the config node. Owns the one MQTT connection (read-only `dashboard` account)
// and the key-admin API credentials; the other medsec nodes borrow both.
"use strict";

const mqtt = require("mqtt");
const crypto = require("crypto");
const { topicMatches } = require("./lib/topics");

const ENV_REF = /^\$\{(\S+)\}$/;

module.exports = function (RED) {
    function MedsecGatewayNode(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        node.broker = config.broker || "mqtt://127.0.0.1:1883";
        node.adminUrl = (config.adminUrl || "http://127.0.0.1:8080/api/v1").replace(/\/+$/, "");
        node.connected = false;
        node.handlers = new Map(); // filter -> Set of {fn, owner}
        node.watchers = new Set();
        node.subscribed = new Set(); // filters the broker has acknowledged
        // Last payload of every topic the broker has sent us as retained (device status): a node
        // joining an existing subscription gets them replayed, as a fresh subscription would.
        node.retained = new Map();

        // Credentials may hold an environment reference such as ${MEDSEC_MQTT_PASSWORD}: how the
        // medsec runtime passes secrets in without writing them into any flow file.
        function credential(name) {
            const value = (node.credentials || {})[name] || "";
            const ref = ENV_REF.exec(value);
            if (!ref) {
                return value;
            }
            const resolved = RED.util.getSetting(node, ref[1]);
            return resolved === undefined ? "" : String(resolved);
        }
        const username = config.username || "";
        const password = credential("password");
        // GETs use the token (scope read); writes the manage token when one is set (the Devices
        // page), else the same token (a flow given one manage or admin token).
        node.token = (method) => (method && method !== "GET" && credential("manageToken")) || credential("token");

        function notify(state, detail) {
            node.connected = state === "connected";
            for (const watcher of node.watchers) {
                watcher(state, detail);
            }
        }

        let client;
        try {
            client = mqtt.connect(node.broker, {
                username: username || undefined,
                password: password || undefined,
                clientId: `medsec-nodered-${crypto.randomBytes(5).toString("hex")}`,
                protocolVersion: 4,
                clean: true,
                reconnectPeriod: 1000,
                connectTimeout: 5000,
                resubscribe: false,
            });
        } catch (err) {
            node.error(`cannot connect to ${node.broker}: ${err.message}`);
            client = null;
        }
        node.client = client;
        if (client) {
            let lastError = null;
            // A clean session every time: (re)subscribe whatever the nodes follow, including
            // after the broker was down when Node-RED started.
            client.on("connect", () => {
                lastError = null;
                node.subscribed.clear();
                for (const filter of node.handlers.keys()) {
                    brokerSubscribe(filter);
                }
                notify("connected");
            });
            client.on("close", () => {
                node.subscribed.clear();
                notify("disconnected");
            });
            client.on("offline", () => notify("disconnected"));
            client.on("error", (err) => {
                // The broker's reason (e.g. "Not authorized"), never the password; once per
                // kind of failure, not at every reconnect attempt.
                if (err.message !== lastError) {
                    lastError = err.message;
                    node.warn(`broker ${node.broker}: ${err.message}`);
                }
                notify("error", err.message);
            });
            client.on("message", (topic, payload, packet) => {
                // Pico/<id>/status and /alert are retained by contract even when they arrive live.
                if (packet.retain || topic.endsWith("/status") || topic.endsWith("/alert")) {
                    if (payload.length === 0) {
                        node.retained.delete(topic);
                    } else {
                        node.retained.set(topic, payload);
                    }
                }
                for (const [filter, entries] of node.handlers) {
                    if (topicMatches(filter, topic)) {
                        for (const entry of entries) {
                            try {
                                entry.fn(topic, payload, packet);
                            } catch (err) {
                                node.error(`handler for ${topic} failed: ${err.message}`);
                            }
                        }
                    }
                }
            });
        }

        // Follow the connection state: fn("connected" | "disconnected" | "error", detail).
        node.watch = function (fn) {
            node.watchers.add(fn);
            fn(node.connected ? "connected" : "disconnected");
            return () => node.watchers.delete(fn);
        };

        // Subscribe fn(topic, payload, packet) to filter; one broker subscription per filter,
        // however many nodes share it. Returns the function that undoes it.
        function brokerSubscribe(filter) {
            client.subscribe(filter, { qos: 1 }, (err, granted) => {
                if (err) {
                    return; // the connection dropped first; "connect" subscribes again
                }
                if (granted && granted.some((g) => g.qos === 128)) {
                    node.error(`subscription to ${filter} refused by the broker`);
                } else if (node.handlers.has(filter)) {
                    node.subscribed.add(filter);
                }
            });
        }

        // Subscribe fn(topic, payload, packet) to filter; one broker subscription per filter,
        // however many nodes share it. Returns the function that undoes it.
        node.subscribe = function (filter, fn) {
            const entry = { fn };
            let entries = node.handlers.get(filter);
            if (!entries) {
                entries = new Set();
                node.handlers.set(filter, entries);
                if (client && client.connected) {
                    brokerSubscribe(filter);
                }
            } else {
                const replay = [...node.retained].filter(([topic]) => topicMatches(filter, topic));
                setImmediate(() => {
                    for (const [topic, payload] of replay) {
                        if (entries.has(entry)) {
                            entry.fn(topic, payload, { retain: true });
                        }
                    }
                });
            }
            entries.add(entry);
            return function unsubscribe() {
                entries.delete(entry);
                if (entries.size === 0 && node.handlers.get(filter) === entries) {
                    node.handlers.delete(filter);
                    node.subscribed.delete(filter);
                    if (client && client.connected) {
                        client.unsubscribe(filter);
                    }
                }
            };
        };

        // Call the key-admin API. Resolves {status, body}; rejects with an Error whose message
        // is the API's own {"error"} text (never the token) and .statusCode.
        node.admin = async function (method, path, body) {
            const token = node.token(method);
            if (!token) {
                throw new Error("medsec-gateway has no key-admin token");
            }
            const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
            const init = { method, headers, signal: AbortSignal.timeout(10000) };
            if (body !== undefined) {
                headers["Content-Type"] = "application/json";
                init.body = JSON.stringify(body);
            }
            let res;
            try {
                res = await fetch(node.adminUrl + path, init);
            } catch (err) {
                const reason = err.cause && err.cause.code ? err.cause.code : err.message;
                throw new Error(`key-admin API ${node.adminUrl} unreachable: ${reason}`);
            }
            const text = await res.text();
            let data = null;
            try {
                data = text ? JSON.parse(text) : null;
            } catch (err) {
                data = null;
            }
            if (!res.ok) {
                const reason = data && typeof data.error === "string" ? data.error : `HTTP ${res.status}`;
                const err = new Error(`key-admin API: ${method} ${path}: ${reason}`);
                err.statusCode = res.status;
                throw err;
            }
            return { status: res.status, body: data };
        };

        node.on("close", function (removed, done) {
            node.handlers.clear();
            node.watchers.clear();
            if (!client) {
                done();
                return;
            }
            client.end(true, {}, () => done());
        });
    }

    RED.nodes.registerType("medsec-gateway", MedsecGatewayNode, {
        credentials: {
            password: { type: "password" },
            token: { type: "password" },
            manageToken: { type: "password" },
        },
    });
};
