// medsec sealed envelopes (docs/envelope.md): the same bytes as services/common/envelope.py.
// AES-256-GCM payload (header as AAD), key wrapped with RSA-OAEP SHA-256, RSA-PSS SHA-256 signature
// (salt 32) over everything before it; sender, recipient, kind, random nonce, timestamp (ms).
// Pure functions plus a small Opener that holds the nonce cache. Node's crypto module only.
"use strict";

const crypto = require("crypto");

const MAGIC = Buffer.from("MSE1", "ascii");
const NONCE_LEN = 16;
const IV_LEN = 12;
const TAG_LEN = 16;
const KEY_LEN = 32;
const SALT_LEN = 32;
const MIN_RSA_BITS = 3072;
const DEFAULT_WINDOW = 120;
const MAX_PAYLOAD = 64 * 1024 * 1024;
const ID_RE = /^[A-Za-z0-9_.-]{1,64}$/;

class EnvelopeError extends Error {
    constructor(reason, detail) {
        super(`${reason}: ${detail}`);
        this.reason = reason;
        this.detail = detail;
    }
}

function short(name, value) {
    if (typeof value !== "string" || !ID_RE.test(value)) {
        throw new Error(`${name} must be 1-64 characters of [A-Za-z0-9_.-]`);
    }
    const raw = Buffer.from(value, "ascii");
    return Buffer.concat([Buffer.from([raw.length]), raw]);
}

function u16(n) { const b = Buffer.alloc(2); b.writeUInt16BE(n); return b; }
function u32(n) { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; }

function asKey(key, isPrivate) {
    if (key instanceof crypto.KeyObject) {
        return key;
    }
    return isPrivate ? crypto.createPrivateKey(key) : crypto.createPublicKey(key);
}

function checkKeySize(key, what) {
    const bits = key.asymmetricKeyDetails && key.asymmetricKeyDetails.modulusLength;
    if (key.asymmetricKeyType !== "rsa" || !bits || bits < MIN_RSA_BITS) {
        throw new Error(`${what} must be RSA with at least ${MIN_RSA_BITS} bits`);
    }
}

// A key from a node's settings; the error never echoes key material.
function loadKey(pem, isPrivate, what) {
    try {
        const key = asKey(pem, isPrivate);
        checkKeySize(key, what);
        return key;
    } catch (err) {
        throw new Error(`${what} is missing or not a PEM RSA key of at least ${MIN_RSA_BITS} bits`);
    }
}

// Seal `payload` (Buffer) for the recipient. opts.now / nonce / aesKey / iv are for test vectors only.
function seal(payload, opts) {
    const { kind, sender, recipient } = opts;
    const senderKey = asKey(opts.senderKey, true);
    const recipientKey = asKey(opts.recipientKey, false);
    checkKeySize(recipientKey, "the recipient's key");
    if (!Buffer.isBuffer(payload)) {
        throw new Error("payload must be a Buffer");
    }
    if (payload.length > MAX_PAYLOAD) {
        throw new Error(`payload is ${payload.length} bytes; at most ${MAX_PAYLOAD}`);
    }
    const nowMs = Math.round((opts.now === undefined ? Date.now() / 1000 : opts.now) * 1000);
    const nonce = opts.nonce || crypto.randomBytes(NONCE_LEN);
    const aesKey = opts.aesKey || crypto.randomBytes(KEY_LEN);
    const iv = opts.iv || crypto.randomBytes(IV_LEN);
    if (nonce.length !== NONCE_LEN || aesKey.length !== KEY_LEN || iv.length !== IV_LEN) {
        throw new Error("nonce, key or iv has the wrong length");
    }
    const wrapped = crypto.publicEncrypt(
        { key: recipientKey, padding: crypto.constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" }, aesKey);
    const ts = Buffer.alloc(8);
    ts.writeBigUInt64BE(BigInt(nowMs));
    const aad = Buffer.concat([MAGIC, ts, nonce, short("kind", kind), short("sender", sender),
        short("recipient", recipient), u16(wrapped.length), wrapped, iv]);
    const cipher = crypto.createCipheriv("aes-256-gcm", aesKey, iv, { authTagLength: TAG_LEN });
    cipher.setAAD(aad);
    const ciphertext = Buffer.concat([cipher.update(payload), cipher.final()]);
    const signed = Buffer.concat([aad, u32(ciphertext.length), ciphertext, cipher.getAuthTag()]);
    const signature = crypto.sign("sha256", signed, {
        key: senderKey, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: SALT_LEN });
    return Buffer.concat([signed, u16(signature.length), signature]);
}

// Split an envelope into its fields; EnvelopeError("malformed") for anything else.
function parse(data, maxPayload = MAX_PAYLOAD) {
    if (!Buffer.isBuffer(data)) {
        throw new EnvelopeError("malformed", "not bytes");
    }
    let pos = 0;
    const take = (n, what) => {
        if (n < 0 || pos + n > data.length) {
            throw new EnvelopeError("malformed", `truncated in ${what}`);
        }
        const chunk = data.subarray(pos, pos + n);
        pos += n;
        return chunk;
    };
    const ident = (what) => {
        const n = take(1, what)[0];
        const s = take(n, what).toString("latin1");
        if (!ID_RE.test(s)) {
            throw new EnvelopeError("malformed", `${what} is not a valid id`);
        }
        return s;
    };
    if (!take(4, "magic").equals(MAGIC)) {
        throw new EnvelopeError("malformed", "not a medsec envelope (bad magic)");
    }
    const tsMs = Number(take(8, "timestamp").readBigUInt64BE());
    const nonce = take(NONCE_LEN, "nonce");
    const kind = ident("kind");
    const sender = ident("sender");
    const recipient = ident("recipient");
    const wrappedKey = take(take(2, "wrapped key length").readUInt16BE(), "wrapped key");
    if (wrappedKey.length < 256 || wrappedKey.length > 1024) {
        throw new EnvelopeError("malformed", `wrapped key of ${wrappedKey.length} bytes`);
    }
    const iv = take(IV_LEN, "iv");
    const aadEnd = pos;
    const ctLen = take(4, "ciphertext length").readUInt32BE();
    if (ctLen > maxPayload) {
        throw new EnvelopeError("malformed", `payload of ${ctLen} bytes is over the limit of ${maxPayload}`);
    }
    const ciphertext = take(ctLen, "ciphertext");
    const tag = take(TAG_LEN, "tag");
    const signedEnd = pos;
    const signature = take(take(2, "signature length").readUInt16BE(), "signature");
    if (pos !== data.length) {
        throw new EnvelopeError("malformed", `${data.length - pos} trailing bytes`);
    }
    return { tsMs, ts: tsMs / 1000, nonce, kind, sender, recipient, wrappedKey, iv, ciphertext, tag, signature,
        aad: data.subarray(0, aadEnd), signed: data.subarray(0, signedEnd) };
}

function verify(env, senderKey) {
    let ok = false;
    try {
        ok = crypto.verify("sha256", env.signed, {
            key: asKey(senderKey, false), padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: SALT_LEN,
        }, env.signature);
    } catch (err) {
        ok = false;
    }
    if (!ok) {
        throw new EnvelopeError("bad_signature", `signature of ${JSON.stringify(env.sender)} does not verify`);
    }
}

function checkTime(env, now, window = DEFAULT_WINDOW) {
    const skew = env.ts - now;
    if (Math.abs(skew) > window) {
        throw new EnvelopeError("stale", `timestamp is ${skew.toFixed(0)}s from now (window ±${window}s)`);
    }
}

function decrypt(env, recipientKey) {
    let aesKey;
    try {
        aesKey = crypto.privateDecrypt({ key: asKey(recipientKey, true),
            padding: crypto.constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" }, env.wrappedKey);
    } catch (err) {
        throw new EnvelopeError("undecryptable", "wrapped key does not open with this recipient's key");
    }
    if (aesKey.length !== KEY_LEN) {
        throw new EnvelopeError("undecryptable", "wrapped key is not an AES-256 key");
    }
    try {
        const decipher = crypto.createDecipheriv("aes-256-gcm", aesKey, env.iv, { authTagLength: TAG_LEN });
        decipher.setAAD(env.aad);
        decipher.setAuthTag(env.tag);
        return Buffer.concat([decipher.update(env.ciphertext), decipher.final()]);
    } catch (err) {
        throw new EnvelopeError("undecryptable", "GCM tag does not verify");
    }
}

// Nonces seen per sender, forgotten once outside the window; bounded, with a floor so an
// evicted nonce can never be replayed (same rules as the Python NonceCache).
class NonceCache {
    constructor(window = DEFAULT_WINDOW, perSender = 4096, maxSenders = 1024) {
        this.windowMs = window * 1000;
        this.perSender = perSender;
        this.maxSenders = maxSenders;
        this.seen = new Map();
        this.floor = new Map();
    }

    checkAndAdd(sender, nonce, tsMs, now) {
        const key = Buffer.from(nonce).toString("hex");
        const cutoff = now * 1000 - this.windowMs;
        let seen = this.seen.get(sender);
        if (seen) {
            for (const [n, ts] of seen) {
                if (ts < cutoff) {
                    seen.delete(n);
                }
            }
        }
        const floor = this.floor.has(sender) ? this.floor.get(sender) : -1;
        if ((seen && seen.has(key)) || tsMs <= floor) {
            throw new EnvelopeError("replay", `nonce from ${JSON.stringify(sender)} was seen before`);
        }
        if (!seen) {
            if (this.seen.size >= this.maxSenders) {
                const [oldSender, old] = this.seen.entries().next().value;
                this.seen.delete(oldSender);
                this.floor.set(oldSender, Math.max(this.floor.get(oldSender) ?? -1, ...old.values()));
            }
            seen = new Map();
        }
        this.seen.delete(sender);
        this.seen.set(sender, seen); // most recently used last
        seen.set(key, tsMs);
        while (seen.size > this.perSender) {
            const [n, ts] = seen.entries().next().value;
            seen.delete(n);
            this.floor.set(sender, Math.max(this.floor.get(sender) ?? -1, ts));
        }
    }

    get size() {
        let n = 0;
        for (const s of this.seen.values()) {
            n += s.size;
        }
        return n;
    }
}

// The receiving side: parse, check recipient, signature, time and nonce, then decrypt.
// senderKeys(id) returns the sender's public key (PEM or KeyObject) or null.
class Opener {
    constructor(me, myKey, senderKeys, { window = DEFAULT_WINDOW, clock = () => Date.now() / 1000,
        maxPayload = MAX_PAYLOAD } = {}) {
        this.me = me;
        this.myKey = asKey(myKey, true);
        this.senderKeys = senderKeys;
        this.window = window;
        this.clock = clock;
        this.maxPayload = maxPayload;
        this.nonces = new NonceCache(window);
    }

    open(data) {
        const env = parse(data, this.maxPayload);
        if (env.recipient !== this.me) {
            throw new EnvelopeError("wrong_recipient",
                `sealed for ${JSON.stringify(env.recipient)}, not ${JSON.stringify(this.me)}`);
        }
        const key = this.senderKeys(env.sender);
        if (!key) {
            throw new EnvelopeError("unknown_sender", `no public key for ${JSON.stringify(env.sender)}`);
        }
        verify(env, key);
        const now = this.clock();
        checkTime(env, now, this.window);
        this.nonces.checkAndAdd(env.sender, env.nonce, env.tsMs, now); // only after the signature verified
        return { envelope: env, payload: decrypt(env, this.myKey) };
    }
}

module.exports = {
    seal, parse, verify, checkTime, decrypt, NonceCache, Opener, EnvelopeError, checkKeySize, asKey, loadKey,
    MAGIC, DEFAULT_WINDOW, MAX_PAYLOAD, ID_RE,
};
