// Dashboard 2.0 plugin: every message from a dashboard session carries the session's login in
// msg._client.user ({username, role}), taken from the socket the medsec settings authenticated,
// never from the browser (a _client the browser sends is replaced). The medsec-devices node
// checks that role before it adds, rotates or revokes.
"use strict";

function sessionUser(conn) {
    const user = conn && conn.data && conn.data.medsecUser;
    return user ? { username: user.username, role: user.role } : null;
}

function stamp(conn, msg) {
    if (Array.isArray(msg)) {
        return msg.map((m) => stamp(conn, m));
    }
    if (!msg || typeof msg !== "object") {
        return msg;
    }
    msg._client = { user: sessionUser(conn) };
    return msg;
}

module.exports = function (RED) {
    RED.plugins.registerPlugin("medsec-dashboard-users", {
        type: "node-red-dashboard-2",
        hooks: {
            onAction: (conn, id, msg) => stamp(conn, msg),
            onSend: (conn, id, msg) => stamp(conn, msg),
            onChange: (conn, id, msg) => stamp(conn, msg),
            onAddConnectionCredentials: (conn, msg) => {
                msg._client = { ...msg._client, user: sessionUser(conn) };
                return msg;
            },
        },
    });
};

module.exports.stamp = stamp;
