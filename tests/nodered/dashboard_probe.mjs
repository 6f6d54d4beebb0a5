// Drive the medsec dashboard in headless Chromium (playwright-core, Debian's chromium).
// Usage: node dashboard_probe.mjs <playwright-core dir>; then one JSON command per line on stdin,
// one JSON answer per line on stdout: {"ok": true, "result": ...} or {"ok": false, "error": "..."}.
//   {"cmd": "open", "url", "user", "password"}   log in (HTTP Basic) and open a dashboard page
//   {"cmd": "fleet"}                             the device cards on the fleet page
//   {"cmd": "device", "url", "id"}               the device page (in its own tab), `id` chosen in the dropdown
//   {"cmd": "admin", "url", "action", "id", "protocol"}   press a button on the Devices page
//   {"cmd": "alerts", "url"}                     the Alerts page: open alerts and the log
//   {"cmd": "screenshot", "path", "tab"}         tab "device" for the device page
//   {"cmd": "watch", "url", "user", "password"}  a second session on the Devices page, kept open
//   {"cmd": "watched"}                           what that session shows: device rows and any credentials
//   {"cmd": "viewer", "name", "url", "user", "password"}   another login's Device page, kept open as `name`
//   {"cmd": "view", "name", "select", "span", "device"}   on that page: choose a device and/or a range
//                                                (optional), wait until `device`'s history for the range
//                                                is drawn; returns the view and each chart's points
//   {"cmd": "visit", "url", "user", "password", "pages"}   another login in its own browser context:
//                                                the HTTP status of each page and the pages its navigation offers
import { createRequire } from "node:module";
import readline from "node:readline";

const require = createRequire(process.argv[2] + "/");
const { chromium } = require(process.argv[2]);

const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-background-networking", "--disable-gpu"],
});
let context = null;
let page = null;
let devicePage = null; // a second tab that stays on the device page while the test goes on
let watcher = null; // another login's session on the Devices page
const viewers = {}; // name -> a Device page in a browser context of its own (one viewer each)

const commands = {
    async open({ url, user, password }) {
        context = await browser.newContext({ httpCredentials: { username: user, password }, viewport: { width: 1280, height: 800 } });
        page = await context.newPage();
        page.on("dialog", (dialog) => dialog.accept()); // the Devices page's "Revoke ...?"
        const res = await page.goto(url);
        await page.waitForSelector("[data-medsec]", { timeout: 20000 });
        return { status: res.status() };
    },
    // The Alerts page: the open alerts as [device, rule], and the log's rows.
    async alerts({ url }) {
        await page.goto(url);
        await page.waitForSelector("[data-medsec=open-alerts]", { timeout: 20000 });
        return page.evaluate(() => ({
            open: [...document.querySelectorAll("[data-medsec=open-alerts] .alert")]
                .map((a) => [a.dataset.device, a.dataset.rule]),
            log: [...document.querySelectorAll("table tbody tr")].map((tr) => tr.textContent),
        }));
    },
    async fleet_page({ url }) {
        await page.goto(url);
        await page.waitForSelector("[data-medsec=fleet]", { timeout: 20000 });
        return true;
    },
    async fleet() {
        return page.$$eval("[data-medsec=fleet] .card", (cards) => cards.map((c) => ({
            device: c.dataset.device,
            status: c.dataset.status,
            state: c.dataset.state,
            temp: (c.querySelector("[data-field=Temp]") || {}).textContent || null,
            pulse: (c.querySelector("[data-field=PulseSig]") || {}).textContent || null,
            seen: (c.querySelector(".seen") || {}).textContent || null,
            alerts: [...c.querySelectorAll(".alert")].map((a) => a.dataset.rule),
        })));
    },
    async device({ url, id }) {
        devicePage = devicePage || await context.newPage();
        const page = devicePage;
        await page.goto(url);
        const select = await page.waitForSelector("[data-medsec=device-select]", { timeout: 20000 });
        await page.waitForFunction((want) => [...document.querySelectorAll("[data-medsec=device-select] option")]
            .some((o) => o.value === want), id, { timeout: 20000 });
        await select.selectOption(id);
        // Read the header in the same evaluation that finds it ready: it re-renders on every reading.
        const info = await page.waitForFunction((want) => {
            const h = document.querySelector("[data-medsec=device-header]");
            const temp = h && h.dataset.device === want && h.querySelector("[data-field=Temp]");
            return temp ? { device: want, temp: temp.textContent, charts: document.querySelectorAll("[data-medsec=chart]").length } : null;
        }, id, { timeout: 20000 });
        return info.jsonValue();
    },
    // The Devices page: type an id, pick the protocol, press a button; returns what the page shows.
    async admin({ url, action, id, protocol }) {
        if (!page.url().startsWith(url)) {
            await page.goto(url);
        }
        await page.waitForSelector("[data-medsec=admin-id]", { timeout: 20000 });
        await page.fill("[data-medsec=admin-id]", id);
        if (protocol) {
            await page.selectOption("[data-medsec=admin-protocol]", protocol);
        }
        await page.click(`[data-medsec=admin-${action}]`);
        const shown = await page.waitForFunction(({ action, id }) => {
            const error = document.querySelector("[data-medsec=admin-error]");
            if (error) {
                return { error: error.textContent };
            }
            const row = document.querySelector(`[data-medsec=admin-list] tr[data-device="${id}"]`);
            const secret = document.querySelector("[data-medsec=admin-secret] pre");
            const state = row ? row.dataset.state : null;
            if (action === "revoke" ? state === "revoked" : row && secret && secret.textContent.includes(id)) {
                return { state, secret: secret ? secret.textContent : null };
            }
            return null;
        }, { action, id }, { timeout: 20000 });
        return shown.jsonValue();
    },
    async watch({ url, user, password }) {
        const other = await browser.newContext({ httpCredentials: { username: user, password } });
        watcher = await other.newPage();
        await watcher.goto(url);
        await watcher.waitForSelector("[data-medsec=admin-list]", { timeout: 20000 });
        return true;
    },
    async watched() {
        return watcher.evaluate(() => ({
            rows: [...document.querySelectorAll("[data-medsec=admin-list] tr[data-device]")]
                .map((tr) => [tr.dataset.device, tr.dataset.state]),
            secret: (document.querySelector("[data-medsec=admin-secret]") || {}).textContent || null,
        }));
    },
    async visit({ url, user, password, pages }) {
        const other = await browser.newContext({ httpCredentials: { username: user, password } });
        try {
            const tab = await other.newPage();
            const status = {};
            for (const name of pages) {
                status[name] = (await tab.goto(`${url}/${name}`)).status();
            }
            await tab.goto(`${url}/${pages[0]}`);
            await tab.waitForSelector("[data-medsec]", { timeout: 20000 });
            await tab.waitForSelector("[data-nav]", { state: "attached", timeout: 20000 });
            const nav = await tab.$$eval("[data-nav]", (links) => links.map((a) => a.textContent.trim()));
            return { status, nav };
        } finally {
            await other.close();
        }
    },
    async viewer({ name, url, user, password }) {
        const other = await browser.newContext({ httpCredentials: { username: user, password }, viewport: { width: 1280, height: 900 } });
        viewers[name] = await other.newPage();
        await viewers[name].goto(url);
        await viewers[name].waitForSelector("[data-medsec=device-view]", { timeout: 20000 });
        return true;
    },
    async view({ name, select, span, device }) {
        const tab = viewers[name];
        if (select) {
            await tab.selectOption("[data-medsec=device-select]", select);
        }
        if (span) {
            await tab.click(`[data-medsec=spans] button[data-span="${span}"]`);
        }
        const shown = await tab.waitForFunction((device) => {
            const v = document.querySelector("[data-medsec=device-view]");
            if (!v || v.dataset.device !== device || !v.dataset.loaded.startsWith(device + " ")) {
                return null;
            }
            const charts = {};
            for (const svg of document.querySelectorAll("[data-medsec=chart]")) {
                const lines = [...svg.querySelectorAll("polyline")].map((l) => l.getAttribute("points").trim().split(/\s+/).filter(Boolean).length);
                charts[svg.dataset.chart] = { points: Number(svg.dataset.points), first: Number(svg.dataset.first), drawn: lines };
            }
            return { device: v.dataset.device, span: v.dataset.span, loaded: v.dataset.loaded, history: Number(v.dataset.history), charts };
        }, device, { timeout: 20000 });
        return shown.jsonValue();
    },
    async screenshot({ path, tab }) {
        await (tab === "device" ? devicePage : viewers[tab] || page).screenshot({ path, fullPage: true });
        return path;
    },
};

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
    let answer;
    try {
        const cmd = JSON.parse(line);
        answer = { ok: true, result: await commands[cmd.cmd](cmd) };
    } catch (err) {
        answer = { ok: false, error: String(err && err.message ? err.message : err).slice(0, 2000) };
    }
    process.stdout.write(JSON.stringify(answer) + "\n");
}
await browser.close();
