# Configuration page field codec, device side (MicroPython subset, pure).
#
# Two formats arrive from the browser:
#  - legacy (the original page, old bookmarks): each field AES-128-CBC under
#    "Key 1" with the static IV b"BBBBBBBBBBBBBBBB", the value left-padded
#    with '#' to 16 characters (so at most 16), hex. No integrity.
#  - v2 (our page): each field is hex(iv || AES-128-CBC(Key 1, iv, PKCS#7(value)))
#    with a fresh random IV, any length; an HMAC-SHA256 over every field
#    (encrypt-then-MAC) under a key derived from Key 1 refuses tampering.
import binascii
import hashlib

import cryptolib

LEGACY_IV = b"BBBBBBBBBBBBBBBB"
FIELDS = ("server_ip", "server_port", "wifi_name", "wifi_pass")
MAC_LABEL = b"medsec config mac v2"
MAC_CONTEXT = b"medsec-config-v2"
MAX_FIELD_HEX = 2 * (16 + 80)
_CBC = 2


class ConfigError(ValueError):
    def __init__(self, reason, detail):
        super().__init__(reason + ": " + detail)
        self.reason = reason
        self.detail = detail


def _hmac_sha256(key, msg):
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + b"\x00" * (64 - len(key))
    inner = hashlib.sha256(bytes([k ^ 0x36 for k in key]))
    inner.update(msg)
    outer = hashlib.sha256(bytes([k ^ 0x5C for k in key]))
    outer.update(inner.digest())
    return outer.digest()


def mac_key(key1):
    # A key of its own for the MAC: never the AES key itself.
    return _hmac_sha256(key1, MAC_LABEL)


def mac_input(fields):
    # The device's nonce, then field name and hex value of every field in a fixed order, one per line.
    parts = [MAC_CONTEXT, b"nonce=" + fields.get("nonce", "").encode()]
    for name in FIELDS:
        parts.append(name.encode() + b"=" + fields[name].encode())
    return b"\n".join(parts)


def compute_mac(key1, fields):
    return binascii.hexlify(_hmac_sha256(mac_key(key1), mac_input(fields))).decode()


def _equal(a, b):
    # Constant time: a mismatch position must not show in the timing.
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= ord(a[i]) ^ ord(b[i])
    return diff == 0


def _unhex(name, text):
    if len(text) % 2 or len(text) > MAX_FIELD_HEX:
        raise ConfigError("bad_field", name + " has a bad length")
    try:
        return binascii.unhexlify(text)
    except ValueError:
        raise ConfigError("bad_field", name + " is not hex")


def _text(name, raw):
    try:
        return raw.decode("utf-8")
    except UnicodeError:
        raise ConfigError("bad_field", name + " is not UTF-8")


def decode_legacy_field(key1, name, hex_text):
    raw = _unhex(name, hex_text)
    if len(raw) != 16:
        raise ConfigError("bad_field", name + " must be one block")
    plain = cryptolib.aes(key1, _CBC, LEGACY_IV).decrypt(raw)
    return _text(name, plain).lstrip("#")


def encode_legacy_field(key1, value):
    # What the original page sends; used by tests and the host simulator.
    text = value.encode()
    if len(text) > 16:
        raise ConfigError("too_long", "legacy fields hold at most 16 bytes")
    text = b"#" * (16 - len(text)) + text
    return binascii.hexlify(cryptolib.aes(key1, _CBC, LEGACY_IV).encrypt(text)).decode()


def unpad(data):
    if not data or len(data) % 16:
        raise ConfigError("bad_padding", "ciphertext is not whole blocks")
    n = data[-1]
    if n < 1 or n > 16 or data[-n:] != bytes([n]) * n:
        raise ConfigError("bad_padding", "bad PKCS#7 padding")
    return data[:-n]


def pkcs7(data):
    n = 16 - len(data) % 16
    return data + bytes([n]) * n


def decode_field(key1, name, hex_text):
    raw = _unhex(name, hex_text)
    if len(raw) < 32 or len(raw) % 16:
        raise ConfigError("bad_field", name + " must be an IV and whole blocks")
    plain = cryptolib.aes(key1, _CBC, raw[:16]).decrypt(raw[16:])
    return _text(name, unpad(plain))


def encode_field(key1, iv, value):
    ct = cryptolib.aes(key1, _CBC, iv).encrypt(pkcs7(value.encode()))
    return binascii.hexlify(iv + ct).decode()


def decode_submission(key1, params, nonce=None):
    """Decrypt a submitted form (dict of query parameters) into plain field values.

    A v2 submission (has "mac") must carry a valid MAC over the device's
    current nonce and all four fields, so an altered or replayed submission is
    refused; anything else is treated as the original page's format.
    """
    for name in FIELDS:
        if name not in params:
            raise ConfigError("missing_field", name + " is missing")
    if "mac" in params:
        if nonce is not None and not _equal(params.get("nonce", ""), nonce):
            raise ConfigError("stale", "submission is stale or replayed: reload the page")
        if not _equal(params["mac"], compute_mac(key1, params)):
            raise ConfigError("bad_mac", "submission altered or wrong Key 1")
        return {name: decode_field(key1, name, params[name]) for name in FIELDS}
    return {name: decode_legacy_field(key1, name, params[name]) for name in FIELDS}


def valid_ipv4(text):
    parts = text.split(".")
    if len(parts) != 4:
        return False
    for p in parts:
        if not p or len(p) > 3 or not p.isdigit() or int(p) > 255:
            return False
        if len(p) > 1 and p[0] == "0":
            return False
    return True


def validate(values):
    """The device's own check of what the page checked: a dict ready to store, or ConfigError."""
    ip = values["server_ip"]
    if not valid_ipv4(ip):
        raise ConfigError("bad_ip", "server address must be an IPv4 dotted quad")
    port = values["server_port"]
    if not port.isdigit() or len(port) > 5 or not 1024 <= int(port) <= 65535:
        raise ConfigError("bad_port", "server port must be 1024-65535")
    ssid = values["wifi_name"]
    if not ssid or len(ssid.encode()) > 32:
        raise ConfigError("bad_ssid", "Wi-Fi name must be 1-32 bytes")
    pw = values["wifi_pass"]
    n = len(pw.encode())
    if n and (n < 8 or n > 63):
        raise ConfigError("bad_password", "Wi-Fi password must be empty or 8-63 characters")
    return {"server_ip": ip, "server_port": int(port), "wifi_ssid": ssid, "wifi_password": pw}
