# Device settings: site settings and secrets in two JSON files, written atomically.
#
#   settings.json  device_id, server_ip, server_port, wifi_ssid, protocol (v1|v2),
#                  net (esp8266|wlan), variant, interval_ms, ...
#   secrets.json   wifi_password, config_key ("Key 1"), v1_key, v1_iv, v2_master_key, v2_key_id (hex)
import json
import os

SETTINGS = "settings.json"
SECRETS = "secrets.json"

DEFAULTS = {
    "device_id": "",
    "server_ip": "",
    "server_port": 9998,
    "wifi_ssid": "",
    "protocol": "v1",
    "net": "esp8266",
    "variant": "chained",
    "interval_ms": 1000,
    "backoff_min_ms": 500,
    "backoff_max_ms": 30000,
    "ring_size": 64,
    "ack_timeout_ms": 5000,
    "led_pin": "LED",
}
SECRET_KEYS = ("wifi_password", "config_key", "v1_key", "v1_iv", "v2_master_key", "v2_key_id")
# Fields the configuration page may change, and the file each one lives in.
PAGE_FIELDS = {"server_ip": SETTINGS, "server_port": SETTINGS, "wifi_ssid": SETTINGS,
               "wifi_password": SECRETS}


def _join(root, name):
    if not root:
        return name
    return root.rstrip("/") + "/" + name


def _read(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError:
        return {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    # rename is atomic on littlefs and POSIX: a power cut leaves the old or the new file.
    os.rename(tmp, path)


class Settings:
    def __init__(self, root=""):
        self.root = root
        self.site = {}
        self.secrets = {}
        self.load()

    def load(self):
        self.site = dict(DEFAULTS)
        self.site.update(_read(_join(self.root, SETTINGS)))
        self.secrets = _read(_join(self.root, SECRETS))

    def get(self, name, default=None):
        if name in SECRET_KEYS:
            return self.secrets.get(name, default)
        return self.site.get(name, default)

    def secret_bytes(self, name):
        value = self.secrets.get(name) or ""
        return value.encode()

    def store_page(self, values):
        """Store what the configuration page submitted (already validated)."""
        site = _read(_join(self.root, SETTINGS))
        secrets = _read(_join(self.root, SECRETS))
        for name in values:
            if PAGE_FIELDS.get(name) == SECRETS:
                secrets[name] = values[name]
            else:
                site[name] = values[name]
        # secrets first: settings.json with a server and an SSID is what marks the device configured
        _write(_join(self.root, SECRETS), secrets)
        _write(_join(self.root, SETTINGS), site)
        self.load()

    def save_site(self, name, value):
        site = _read(_join(self.root, SETTINGS))
        site[name] = value
        _write(_join(self.root, SETTINGS), site)
        self.site[name] = value

    def configured(self):
        return bool(self.site.get("server_ip") and self.site.get("wifi_ssid"))
