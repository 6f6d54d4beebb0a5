// A stand-in key-admin API for a describe block: make() returns {server, calls, ...}; the server
// listens on a free local port for the whole block, calls are cleared and the flow unloaded after
// each test. Returns that object, with url (the API base) once the block has started.
"use strict";

const { helper } = require("./flow");
const { freePort } = require("./broker");

function useFakeApi(make) {
    const api = {};
    before(async function () {
        Object.assign(api, make());
        const port = await freePort();
        await new Promise((r) => api.server.listen(port, "127.0.0.1", r));
        api.url = `http://127.0.0.1:${port}/api/v1`;
    });
    after(function () { api.server.close(); });
    afterEach(async function () {
        api.calls.length = 0;
        await helper.unload();
    });
    return api;
}

module.exports = { useFakeApi };
