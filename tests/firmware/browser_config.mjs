// Drive the configuration page in headless Chromium (playwright-core, Debian's chromium).
// Usage: node browser_config.mjs <playwright-core dir> <url> <scenarios.json>
// Each scenario: {"values": {...}, "tamper": bool}. Prints one JSON line per scenario.
import {createRequire} from 'node:module';
import {readFileSync} from 'node:fs';

const [pwDir, url, scenarioFile] = process.argv.slice(2);
const require = createRequire(pwDir + '/');
const {chromium} = require(pwDir);
const scenarios = JSON.parse(readFileSync(scenarioFile, 'utf8'));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-background-networking', '--disable-gpu'],
});
try {
  for (const sc of scenarios) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const requests = [];
    let pageBytes = 0;
    page.on('request', (r) => { if (r.url().includes('/save')) requests.push(r.url()); });
    page.on('response', async (r) => {
      if (new URL(r.url()).pathname === '/') {
        pageBytes = Number(r.headers()['content-length'] || 0);
      }
    });
    if (sc.tamper) {
      await page.route('**/save?*', (route) => {
        // an attacker on the open AP flips one hex digit of the encrypted password
        const u = new URL(route.request().url());
        const v = u.searchParams.get('wifi_pass');
        const i = 40;
        u.searchParams.set('wifi_pass', v.slice(0, i) + (v[i] === '0' ? '1' : '0') + v.slice(i + 1));
        route.continue({url: u.toString()});
      });
    }
    const resp = await page.goto(url);
    const encoding = resp.headers()['content-encoding'] || '';
    for (const [id, value] of Object.entries(sc.values)) await page.fill('#' + id, value);
    await page.click('#save');
    await page.waitForFunction(() => {
      const t = document.getElementById('status').textContent;
      return t && t !== 'Saving...';
    }, null, {timeout: 10000});
    const result = await page.evaluate(() => {
      const errors = {};
      document.querySelectorAll('.err').forEach((e) => { if (e.textContent) errors[e.id.replace('-err', '')] = e.textContent; });
      const s = document.getElementById('status');
      return {status: s.textContent, ok: s.className === 'ok', errors};
    });
    console.log(JSON.stringify({...result, requests, encoding, pageBytes, secure: await page.evaluate(() => isSecureContext)}));
    await context.close();
  }
} finally {
  await browser.close();
}
