// Record what a node reports: status() and error() calls, through the test helper's spies.
"use strict";

function record(node) {
    const seen = { statuses: [], errors: [] };
    node.on("call:status", (call) => seen.statuses.push(call.args[0]));
    node.on("call:error", (call) => seen.errors.push(call.args));
    seen.lastStatus = () => seen.statuses[seen.statuses.length - 1] || {};
    seen.errorText = () => seen.errors.map((args) => String(args[0] && args[0].message ? args[0].message : args[0]));
    return seen;
}

module.exports = { record };
