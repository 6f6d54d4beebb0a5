// Configuration page logic: check the inputs, encrypt each field under Key 1
// (AES-128-CBC, PKCS#7, a fresh random IV per field), authenticate the whole
// submission and the device's one-time nonce with HMAC-SHA256 under a key
// derived from Key 1, and submit.
// The device decrypts, checks the MAC, validates again and stores.
import aesjs from 'aes-js';
import {hmacSha256} from './hmac.js';

const FIELDS = ['server_ip', 'server_port', 'wifi_name', 'wifi_pass'];
const enc = new TextEncoder();
const $ = (id) => document.getElementById(id);
const hex = (b) => Array.from(b, (x) => (x < 16 ? '0' : '') + x.toString(16)).join('');

// Same rules as the device (firmware/lib/cfgcodec.py validate()).
export function check(v) {
  const errors = {};
  if (!/^[\x20-\x7e]{16}$/.test(v.key1)) errors.key1 = 'Key 1 is exactly 16 characters.';
  const parts = v.server_ip.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && +p <= 255)) {
    errors.server_ip = 'Enter an IPv4 address such as 192.168.0.10.';
  }
  if (!/^[0-9]{1,5}$/.test(v.server_port) || +v.server_port < 1024 || +v.server_port > 65535) {
    errors.server_port = 'Port must be 1024 to 65535.';
  }
  const ssid = enc.encode(v.wifi_name).length;
  if (ssid < 1 || ssid > 32) errors.wifi_name = 'Wi-Fi name is 1 to 32 bytes.';
  const pw = enc.encode(v.wifi_pass).length;
  if (pw && (pw < 8 || pw > 63)) errors.wifi_pass = 'Wi-Fi password is empty or 8 to 63 characters.';
  return errors;
}

function encryptField(key, value) {
  const iv = crypto.getRandomValues(new Uint8Array(16));
  const cbc = new aesjs.ModeOfOperation.cbc(key, iv);
  return hex(iv) + hex(cbc.encrypt(aesjs.padding.pkcs7.pad(enc.encode(value))));
}

export function seal(v, nonce) {
  const key = enc.encode(v.key1);
  const out = {nonce: nonce};
  FIELDS.forEach((f) => { out[f] = encryptField(key, v[f]); });
  const macKey = hmacSha256(key, enc.encode('medsec config mac v2'));
  const text = ['medsec-config-v2', 'nonce=' + nonce].concat(FIELDS.map((f) => f + '=' + out[f])).join('\n');
  out.mac = hex(hmacSha256(macKey, enc.encode(text)));
  return out;
}

function status(text, ok) {
  const s = $('status');
  s.textContent = text;
  s.className = ok ? 'ok' : 'fail';
}

$('f').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const v = {key1: $('key1').value};
  FIELDS.forEach((f) => { v[f] = $(f).value; });
  const errors = check(v);
  ['key1'].concat(FIELDS).forEach((f) => {
    $(f).className = errors[f] ? 'bad' : '';
    $(f + '-err').textContent = errors[f] || '';
  });
  if (Object.keys(errors).length) return status('Please correct the marked fields.', false);
  status('Saving...', true);
  try {
    // the device's one-time value: the MAC covers it, so a captured submission cannot be replayed
    const nonce = (await (await fetch('/nonce', {cache: 'no-store'})).text()).trim();
    const q = seal(v, nonce);
    const url = '/save?' + Object.keys(q).map((k) => k + '=' + encodeURIComponent(q[k])).join('&');
    const r = await fetch(url, {cache: 'no-store'});
    const text = (await r.text()).trim();
    status(r.ok ? 'Saved. The device now joins "' + v.wifi_name + '" and starts sending.' : 'Device ' + text, r.ok);
  } catch (e) {
    status('No answer from the device: ' + e.message, false);
  }
});
