// Who may see and do what on the medsec dashboard (Node-RED logins viewer, operator, admin).
// Used by the settings medsec generates (HTTP Basic on the dashboard's routes and its socket.io,
// the editor for admin only) and by the medsec-devices node (who may add, rotate, revoke).
"use strict";

const crypto = require("crypto");

// A page is a Dashboard 2.0 ui-page path under the dashboard's base path.
const ROLES = {
    viewer: { pages: ["/fleet", "/device", "/alerts"], manage: false, editor: false },
    operator: { pages: ["/fleet", "/device", "/alerts", "/devices"], manage: true, editor: false },
    admin: { pages: "*", manage: true, editor: true },
};
// The key-admin actions that change the fleet: only roles with `manage` may ask for them.
const WRITE_ACTIONS = ["add", "rotate", "revoke", "import"];
// Dashboard 2.0's socket events that carry a widget id (inbound: [event, id, ...]).
const WIDGET_EVENTS = ["widget-send", "widget-action", "widget-change", "widget-load"];

function digest(text) {
    return crypto.createHash("sha256").update(String(text)).digest();
}

// The user behind an `Authorization: Basic` header, or null. `users` maps a user name to
// {role, sha256: hex SHA-256 of the password}; the passwords are long random strings, so a
// plain hash is enough and every check costs the same.
function authenticate(users, header) {
    const m = /^Basic\s+([A-Za-z0-9+/=]+)$/.exec(header || "");
    if (!m) {
        return null;
    }
    const text = Buffer.from(m[1], "base64").toString("utf8");
    const colon = text.indexOf(":");
    if (colon <= 0) {
        return null;
    }
    const username = text.slice(0, colon);
    const entry = Object.prototype.hasOwnProperty.call(users, username) ? users[username] : null;
    const want = entry ? Buffer.from(entry.sha256, "hex") : digest("");
    const ok = want.length === 32 && crypto.timingSafeEqual(digest(text.slice(colon + 1)), want);
    return ok && entry && ROLES[entry.role] ? { username, role: entry.role } : null;
}

function pageAllowed(role, path) {
    const pages = ROLES[role] ? ROLES[role].pages : [];
    return pages === "*" || pages.includes(path);
}

function knownPages() {
    return [...new Set(Object.values(ROLES).flatMap((r) => (r.pages === "*" ? [] : r.pages)))];
}

// May this message ask for this key-admin action? A message from a dashboard session carries
// msg._client (set by the dashboard-users plugin from the session's login, never from the
// browser); one without it comes from the flow itself, which only an admin can deploy.
// Returns null when allowed, else the reason.
function refuseAction(action, msg) {
    if (!WRITE_ACTIONS.includes(action) || !msg || msg._client === undefined) {
        return null;
    }
    const user = msg._client && msg._client.user;
    const role = user && ROLES[user.role];
    if (!role) {
        return `${action} refused: no dashboard login on this session`;
    }
    return role.manage ? null : `${action} refused: login ${user.username} (role ${user.role}) may not change devices`;
}

function deny(res, status, text, headers) {
    res.writeHead(status, { "Content-Type": "text/plain", ...headers });
    res.end(text + "\n");
}

// httpNodeAuth (as a middleware): every HTTP route of the dashboard and the flows needs a login;
// a page the role may not see answers 403 (the browser never gets its HTML).
function httpMiddleware(users, base, log) {
    const pages = knownPages();
    return function medsecHttpAuth(req, res, next) {
        const user = authenticate(users, req.headers.authorization);
        if (!user) {
            deny(res, 401, "login required", { "WWW-Authenticate": 'Basic realm="medsec", charset="UTF-8"' });
            return;
        }
        req.medsecUser = user;
        const path = req.path || "";
        if (path === base || path.startsWith(base + "/")) {
            const page = "/" + path.slice(base.length + 1).split("/")[0];
            // Dashboard 2.0's /_debug routes return any widget's stored message: the admin's.
            const debug = page === "/_debug" && !ROLES[user.role].editor;
            if (debug || (pages.includes(page) && !pageAllowed(user.role, page))) {
                log(`event=refused reason=page user=${user.username} role=${user.role} page=${page}`);
                deny(res, 403, `login ${user.username} may not open ${page}`);
                return;
            }
        }
        next();
    };
}

// httpAdminMiddleware: the editor and the admin API are the admin's. Node-RED checks its own
// bearer tokens; a browser that logged into the dashboard as viewer or operator sends their
// Basic credentials here too, and gets a plain 403 instead of the editor. With the editor and
// the dashboard both at "/", Node-RED's admin app sees every request first: the dashboard's
// are left to the dashboard's own checks.
function adminMiddleware(users, base, log) {
    return function medsecEditorGuard(req, res, next) {
        const path = req.path || "";
        if (path === base || path.startsWith(base + "/")) {
            next();
            return;
        }
        const user = authenticate(users, req.headers.authorization);
        if (user && !ROLES[user.role].editor) {
            log(`event=refused reason=editor user=${user.username} role=${user.role} path=${req.path}`);
            deny(res, 403, `login ${user.username} may not use the editor`);
            return;
        }
        next();
    };
}

// Which widgets of a ui-config a role may not see: those on pages outside its role. Pure.
function hiddenWidgets(role, config) {
    const hidden = new Set();
    const pages = config.pages || {};
    const groups = config.groups || {};
    const hiddenPages = new Set(Object.keys(pages).filter((id) => !pageAllowed(role, pages[id].path)));
    const hiddenGroups = new Set(Object.keys(groups).filter((id) => hiddenPages.has(groups[id].page)));
    for (const [id, w] of Object.entries(config.widgets || {})) {
        const props = w.props || {};
        if (hiddenGroups.has(props.group) || hiddenPages.has(props.page)) {
            hidden.add(id);
        }
    }
    return { pages: hiddenPages, groups: hiddenGroups, widgets: hidden };
}

// The ui-config a role receives: without the pages it may not see, their groups and widgets. Pure.
function filterConfig(config, hidden) {
    const keep = (obj, drop) => Object.fromEntries(Object.entries(obj || {}).filter(([id]) => !drop.has(id)));
    return {
        ...config,
        pages: keep(config.pages, hidden.pages),
        groups: keep(config.groups, hidden.groups),
        widgets: keep(config.widgets, hidden.widgets),
    };
}

// The widget id an outbound event names ("msg-input:<id>", "widget-load:<id>", ...), or null.
function eventWidget(event) {
    const colon = typeof event === "string" ? event.indexOf(":") : -1;
    return colon > 0 ? event.slice(colon + 1) : null;
}

// Keep a socket to its role's pages, both ways: the ui-config it gets lacks the other pages,
// messages for their widgets are not sent to it, and its events for them are dropped.
function restrictSocket(socket, user, log) {
    if (ROLES[user.role].pages === "*") {
        return;
    }
    let hidden = null; // until the first ui-config: refuse every widget event
    const emit = socket.emit.bind(socket);
    socket.emit = function (event, ...args) {
        if (event === "ui-config" && args[1] && typeof args[1] === "object") {
            hidden = hiddenWidgets(user.role, args[1]);
            return emit(event, args[0], filterConfig(args[1], hidden), ...args.slice(2));
        }
        const widget = eventWidget(event);
        if (widget && (hidden === null || hidden.widgets.has(widget))) {
            return false;
        }
        return emit(event, ...args);
    };
    socket.use((packet, next) => {
        const [event, widget] = packet;
        if (WIDGET_EVENTS.includes(event) && (hidden === null || hidden.widgets.has(widget))) {
            log(`event=refused reason=widget user=${user.username} role=${user.role} widget=${widget}`);
            return; // dropped: never reaches the flow
        }
        next();
    });
}

// dashboard.ioMiddleware: Dashboard 2.0's own transport and origin checks, then the login.
function ioMiddleware(users, log) {
    return function medsecSocketAuth(socket, next) {
        const req = socket.client.conn.request;
        if (req.url.indexOf("transport=websocket") !== -1) {
            socket.client.conn.close(); // as Dashboard 2.0 does: polling first, then upgrade
            return;
        }
        const user = authenticate(users, req.headers.authorization);
        if (!user) {
            next(new Error("unauthorized"));
            return;
        }
        if (socket.handshake.xdomain !== false) { // an Origin header: another site's page
            log(`event=refused reason=origin user=${user.username}`);
            next(new Error("cross-origin"));
            return;
        }
        socket.data.medsecUser = user;
        restrictSocket(socket, user, log);
        next();
    };
}

// adminAuth for the editor: only roles with `editor` may log in; they get every permission.
function adminAuth(users) {
    const editorUser = (username) => {
        const entry = Object.prototype.hasOwnProperty.call(users, username) ? users[username] : null;
        return entry && ROLES[entry.role] && ROLES[entry.role].editor ? { username, permissions: "*" } : null;
    };
    return {
        type: "credentials",
        users: (username) => Promise.resolve(editorUser(username)),
        authenticate: (username, password) => {
            const header = "Basic " + Buffer.from(`${username}:${password}`).toString("base64");
            const user = authenticate(users, header);
            return Promise.resolve(user && editorUser(user.username));
        },
    };
}

module.exports = {
    ROLES, WRITE_ACTIONS, authenticate, pageAllowed, refuseAction, httpMiddleware, adminMiddleware,
    hiddenWidgets, filterConfig, eventWidget, restrictSocket, ioMiddleware, adminAuth,
};
