"""One Config object for every service: the state directory, the ports and every setting.

Everything comes from the environment (prefix MEDSEC_) with defaults, so two
stacks with different MEDSEC_HOME and ports run side by side. `Config.to_env()`
is the inverse: the environment that makes a child process use this config.
Nothing else in the services reads MEDSEC_* variables.

A bad value is a `ConfigError`; every service main and the CLI turn it into
one line on stderr and exit code `EXIT_BAD_CONFIG`.
"""
from __future__ import annotations

import ipaddress
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

# The exit code of every service main and of the CLI for a bad setting (like argparse's usage error).
EXIT_BAD_CONFIG = 2

# Device (and station) ids: 1-64 of [A-Za-z0-9_.-], neither starting nor ending with a dot. The
# dots rule keeps out `.` and `..` (a URL client removes them as path segments, a file path climbs
# with them: /devices/.. is /, stations/../key.pem), ids made only of dots, hidden names (`.x`)
# and a trailing dot that Windows file names and DNS-style names drop (`a.` would become `a`).
# The one rule for every place an id enters: key-admin API, import, stations, CLI, sim, bus.
DEVICE_ID_RE = re.compile(r"^(?!\.)[A-Za-z0-9_.-]{1,64}(?<!\.)$")
DEVICE_ID_RULE = "1-64 characters of A-Z a-z 0-9 _ . -, not starting or ending with a dot"
# sockaddr_un.sun_path on Linux, with its terminating NUL.
_SUN_PATH_MAX = 108


def valid_device_id(device_id: object) -> bool:
    """The one device id check (see DEVICE_ID_RE); anything but a str is invalid."""
    return isinstance(device_id, str) and DEVICE_ID_RE.fullmatch(device_id) is not None


class ConfigError(ValueError):
    """A MEDSEC_* variable with a value that cannot be used; the message names it."""


def bad_config(service: str, exc: Exception) -> int:
    """The one way a process reports a bad setting: a line on stderr, EXIT_BAD_CONFIG."""
    print(f"{service}: bad configuration: {exc}", file=sys.stderr, flush=True)
    return EXIT_BAD_CONFIG


def service_config(service: str) -> Config:
    """A service main()'s settings: Config.from_env(), or, on a bad setting, the process ends
    the one way (bad_config: one line on stderr, exit EXIT_BAD_CONFIG)."""
    try:
        return Config.from_env()
    except ConfigError as exc:
        raise SystemExit(bad_config(service, exc)) from None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _qos(env: Mapping[str, str], name: str, default: int, lowest: int = 1) -> int:
    value = _int(env, name, default)
    if not lowest <= value <= 2:
        raise ConfigError(f"{name} must be {' or '.join(map(str, range(lowest, 3)))}, got {value}")
    return value


def _priority(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if not 0 <= value <= 39:  # nice levels run from 19 down to -20
        raise ConfigError(f"{name} must be 0 to 39 nice levels, got {value}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "")
    if raw in ("", "0"):
        return False
    if raw == "1":
        return True
    raise ConfigError(f"{name} must be 0 or 1, got {raw!r}")


def parse_networks(name: str, text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated IPv4/IPv6 addresses or networks ("" gives none); the error names `name`."""
    if not text.strip():
        return ()
    networks = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {item[:60]!r} is not an IPv4/IPv6 address or network "
                             "(comma-separated, e.g. 10.0.0.5,10.1.0.0/16,fd00::/8)") from None
    if not networks:
        raise ConfigError(f"{name} names no address")
    return tuple(networks)


def _networks(env: Mapping[str, str], name: str) -> str:
    """The variable as given, once it parses (a bad value stops the service at start)."""
    raw = env.get(name, "")
    parse_networks(name, raw)
    return raw


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if not value > 0 or value != value or value == float("inf"):
        raise ConfigError(f"{name} must be a positive number of days, got {env.get(name)!r}")
    return value


@dataclass(frozen=True)
class Config:
    home: Path
    host: str = "127.0.0.1"
    proxy_port: int = 9998
    admin_port: int = 8080
    mqtt_port: int = 1883
    nodered_port: int = 1880
    # v1 readings are 8 blocks; 64 blocks leaves room for longer firmware builds.
    max_reading_blocks: int = 64
    idle_timeout: float = 60.0
    # A reading must be complete within this many seconds of its first byte (slow-drip defence).
    reading_timeout: float = 10.0
    max_connections: int = 20000
    # Failed-identification throttling per source address (proxy): after throttle_failures unknown
    # keys within throttle_window s, refuse the address for throttle_cooldown s, doubling per block
    # up to throttle_max_cooldown. 0 failures switches it off.
    throttle_failures: int = 10
    throttle_window: float = 60.0
    throttle_cooldown: float = 30.0
    throttle_max_cooldown: float = 3600.0
    # Connections from an address in its refusal period are not all closed at accept (a shared NAT
    # must not lock out the devices behind it): they start one per throttle_grace s, in arrival
    # order, at most throttle_queue waiting; 0 s closes them all at accept.
    throttle_grace: float = 2.0
    throttle_queue: int = 8
    # Per-device limit on v1 readings (all its connections on one proxy): device_max_rate readings/s
    # sustained, device_burst at once; above it readings are dropped (rate_limited). 0 = no limit.
    device_max_rate: float = 10.0
    device_burst: int = 20
    # A v1 reading byte-identical to one the same device sent within replay_window s is dropped
    # (replay). 0 switches the check off.
    replay_window: float = 300.0
    # Replayed v1 readings, or v2 duplicates beyond a device's resend, that close a connection.
    # 0 never closes.
    max_duplicates: int = 3
    # A reading the broker has not acknowledged within this many seconds closes its connection
    # (bus_unavailable) instead of queueing without bound while the broker is down.
    bus_timeout: float = 5.0
    # How long the proxy keeps trying to reach a restarting auth before closing the
    # connections that wait for it (auth_unavailable).
    auth_wait: float = 5.0
    # How many nice levels above the other services auth runs (0: the same). Every new device's
    # identification and every reading waits on auth's one loop: on a saturated machine the
    # kernel serves it first. Raising a priority needs root or CAP_SYS_NICE; without, auth runs
    # at the others' priority and says so in its log.
    auth_priority: int = 10
    # The QoS of the public tree (Pico/...): 2 forwards a publish resent after a broker restart
    # once; 1 costs the broker half as much but such a resend reaches subscribers twice.
    public_qos: int = 2
    # The QoS of the seven legacy value topics (Pico/<id>/Physiological_Data/..., Internal_Device_Data/...):
    # 0, as the design they come from published them; Pico/<id>/json carries each reading at public_qos.
    legacy_qos: int = 0
    # Where the MQTT broker is, when it is not on `host` (compose: the EMQX service name).
    mqtt_host: str = ""
    # The auth socket, when not run/auth.sock (compose: a shared volume; scale-out: one per auth).
    auth_socket_override: str = ""
    # Key store: "" is the SQLite file in the state dir; postgresql://... selects PostgreSQL.
    keystore_url: str = ""
    # Behind a load balancer that sends PROXY protocol v2 (HAProxy `send-proxy-v2`): every device
    # connection starts with the header that names the device's own address.
    proxy_protocol: bool = False
    # Who may send that header: comma-separated addresses or networks (IPv4/IPv6). Unset: loopback
    # only (services/proxy/trust.py).
    proxy_trusted: str = ""
    # EMQX's REST API (compose): station logins are added there instead of Mosquitto's plugin.
    emqx_api_url: str = ""
    # Publisher scale-out on EMQX: shared subscriptions, one persistent session per instance id.
    publisher_shared: bool = False
    publisher_id: str = ""
    # Mosquitto's dynamic-security plugin, when it is not where Debian puts it.
    mosquitto_dynsec: str = ""
    # Dispatch: the parameter folder ("" is dispatch/params in the state dir), a line given as
    # "s1,s2,s3" instead of line.json, the envelope time window (s), the station-key cache (s).
    dispatch_params: str = ""
    dispatch_line: str = ""
    dispatch_window: float = 120.0
    dispatch_key_ttl: float = 0.0
    # History (services/history): "" is history.db in the state dir; postgresql://... selects
    # PostgreSQL (its own database or schema, never the key store's: the history service holds no
    # key store credentials). Raw readings kept history_raw_days, per-minute aggregates history_agg_days.
    history_url: str = ""
    history_raw_days: float = 7.0
    history_agg_days: float = 365.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        home = Path(env.get("MEDSEC_HOME") or Path.cwd() / "var").resolve()
        return cls(
            home=home,
            host=env.get("MEDSEC_HOST", "127.0.0.1"),
            proxy_port=_int(env, "MEDSEC_PROXY_PORT", 9998),
            admin_port=_int(env, "MEDSEC_ADMIN_PORT", 8080),
            mqtt_port=_int(env, "MEDSEC_MQTT_PORT", 1883),
            nodered_port=_int(env, "MEDSEC_NODERED_PORT", 1880),
            max_reading_blocks=_int(env, "MEDSEC_MAX_READING_BLOCKS", 64),
            idle_timeout=_float(env, "MEDSEC_IDLE_TIMEOUT", 60.0),
            reading_timeout=_float(env, "MEDSEC_READING_TIMEOUT", 10.0),
            max_connections=_int(env, "MEDSEC_MAX_CONNECTIONS", 20000),
            throttle_failures=_int(env, "MEDSEC_THROTTLE_FAILURES", 10),
            throttle_window=_float(env, "MEDSEC_THROTTLE_WINDOW", 60.0),
            throttle_cooldown=_float(env, "MEDSEC_THROTTLE_COOLDOWN", 30.0),
            throttle_max_cooldown=_float(env, "MEDSEC_THROTTLE_MAX_COOLDOWN", 3600.0),
            throttle_grace=_float(env, "MEDSEC_THROTTLE_GRACE", 2.0),
            throttle_queue=_int(env, "MEDSEC_THROTTLE_QUEUE", 8),
            device_max_rate=_float(env, "MEDSEC_DEVICE_MAX_RATE", 10.0),
            device_burst=_int(env, "MEDSEC_DEVICE_BURST", 20),
            replay_window=_float(env, "MEDSEC_REPLAY_WINDOW", 300.0),
            max_duplicates=_int(env, "MEDSEC_MAX_DUPLICATES", 3),
            bus_timeout=_float(env, "MEDSEC_BUS_TIMEOUT", 5.0),
            auth_wait=_float(env, "MEDSEC_AUTH_WAIT", 5.0),
            auth_priority=_priority(env, "MEDSEC_AUTH_PRIORITY", 10),
            public_qos=_qos(env, "MEDSEC_PUBLIC_QOS", 2),
            legacy_qos=_qos(env, "MEDSEC_LEGACY_QOS", 0, lowest=0),
            mqtt_host=env.get("MEDSEC_MQTT_HOST", ""),
            auth_socket_override=env.get("MEDSEC_AUTH_SOCKET", ""),
            keystore_url=env.get("MEDSEC_KEYSTORE_URL", ""),
            emqx_api_url=env.get("MEDSEC_EMQX_API", ""),
            proxy_protocol=_flag(env, "MEDSEC_PROXY_PROTOCOL"),
            publisher_shared=_flag(env, "MEDSEC_PUBLISHER_SHARED"),
            publisher_id=env.get("MEDSEC_PUBLISHER_ID", ""),
            mosquitto_dynsec=env.get("MEDSEC_MOSQUITTO_DYNSEC", ""),
            dispatch_params=env.get("MEDSEC_DISPATCH_DIR", ""),
            dispatch_line=env.get("MEDSEC_DISPATCH_LINE", ""),
            dispatch_window=_float(env, "MEDSEC_DISPATCH_WINDOW", 120.0),
            dispatch_key_ttl=_float(env, "MEDSEC_DISPATCH_KEY_TTL", 0.0),
            proxy_trusted=_networks(env, "MEDSEC_PROXY_TRUSTED"),
            history_url=env.get("MEDSEC_HISTORY_URL", ""),
            history_raw_days=_positive(env, "MEDSEC_HISTORY_RAW_DAYS", 7.0),
            history_agg_days=_positive(env, "MEDSEC_HISTORY_AGG_DAYS", 365.0),
        )

    def to_env(self) -> dict[str, str]:
        """The environment that makes a child process build this same Config (every field)."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            env[ENV_NAMES[f.name]] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return env

    # --- state directory layout (one place, so every service agrees) ---
    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def broker_dir(self) -> Path:
        return self.home / "broker"

    @property
    def auth_socket(self) -> Path:
        return Path(self.auth_socket_override) if self.auth_socket_override else self.run_dir / "auth.sock"

    @property
    def broker_socket(self) -> Path | None:
        """The local Mosquitto's Unix socket, which the services on this machine use instead of
        TCP (issue 13); None with a broker elsewhere (MEDSEC_MQTT_HOST), or where the path cannot
        be one (over 107 bytes, or a space, which Mosquitto's config cannot hold): TCP then."""
        path = self.run_dir / "mqtt.sock"
        if self.mqtt_host or len(os.fsencode(path)) >= _SUN_PATH_MAX or any(c.isspace() for c in str(path)):
            return None
        return path

    @property
    def broker_host(self) -> str:
        """Where services connect for MQTT: MEDSEC_MQTT_HOST, else `host`."""
        return self.mqtt_host or self.host

    @property
    def keystore_path(self) -> Path:
        return self.home / "keys.db"

    @property
    def master_key_path(self) -> Path:
        return self.secrets_dir / "master.key"

    @property
    def admin_token_path(self) -> Path:
        """The operator's copy of the admin token (what `medsec admin-token` prints)."""
        return self.secrets_dir / "admin.token"

    @property
    def admin_token_hash_path(self) -> Path:
        """What the key-admin API checks against: a SHA-256 of the token, never the token."""
        return self.secrets_dir / "admin.token.sha256"

    @property
    def mqtt_passwords_path(self) -> Path:
        return self.secrets_dir / "mqtt-passwords.json"

    @property
    def history_path(self) -> Path:
        """The SQLite history store (services/history/store.py is the only code that opens it)."""
        return self.home / "history.db"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.admin_port}/api/v1"


# Field -> variable: the one table from_env and to_env agree on (a test checks the round trip).
ENV_NAMES = {
    "home": "MEDSEC_HOME", "host": "MEDSEC_HOST", "proxy_port": "MEDSEC_PROXY_PORT",
    "admin_port": "MEDSEC_ADMIN_PORT", "mqtt_port": "MEDSEC_MQTT_PORT", "nodered_port": "MEDSEC_NODERED_PORT",
    "max_reading_blocks": "MEDSEC_MAX_READING_BLOCKS", "idle_timeout": "MEDSEC_IDLE_TIMEOUT",
    "reading_timeout": "MEDSEC_READING_TIMEOUT", "max_connections": "MEDSEC_MAX_CONNECTIONS",
    "throttle_failures": "MEDSEC_THROTTLE_FAILURES", "throttle_window": "MEDSEC_THROTTLE_WINDOW",
    "throttle_cooldown": "MEDSEC_THROTTLE_COOLDOWN", "throttle_max_cooldown": "MEDSEC_THROTTLE_MAX_COOLDOWN",
    "bus_timeout": "MEDSEC_BUS_TIMEOUT", "auth_wait": "MEDSEC_AUTH_WAIT", "mqtt_host": "MEDSEC_MQTT_HOST",
    "auth_priority": "MEDSEC_AUTH_PRIORITY",
    "auth_socket_override": "MEDSEC_AUTH_SOCKET", "keystore_url": "MEDSEC_KEYSTORE_URL",
    "proxy_protocol": "MEDSEC_PROXY_PROTOCOL", "emqx_api_url": "MEDSEC_EMQX_API",
    "publisher_shared": "MEDSEC_PUBLISHER_SHARED", "publisher_id": "MEDSEC_PUBLISHER_ID",
    "mosquitto_dynsec": "MEDSEC_MOSQUITTO_DYNSEC", "dispatch_params": "MEDSEC_DISPATCH_DIR",
    "dispatch_line": "MEDSEC_DISPATCH_LINE", "dispatch_window": "MEDSEC_DISPATCH_WINDOW",
    "dispatch_key_ttl": "MEDSEC_DISPATCH_KEY_TTL", "proxy_trusted": "MEDSEC_PROXY_TRUSTED",
    "throttle_grace": "MEDSEC_THROTTLE_GRACE", "throttle_queue": "MEDSEC_THROTTLE_QUEUE",
    "device_max_rate": "MEDSEC_DEVICE_MAX_RATE", "device_burst": "MEDSEC_DEVICE_BURST",
    "replay_window": "MEDSEC_REPLAY_WINDOW", "max_duplicates": "MEDSEC_MAX_DUPLICATES",
    "history_url": "MEDSEC_HISTORY_URL", "history_raw_days": "MEDSEC_HISTORY_RAW_DAYS",
    "history_agg_days": "MEDSEC_HISTORY_AGG_DAYS", "public_qos": "MEDSEC_PUBLIC_QOS",
    "legacy_qos": "MEDSEC_LEGACY_QOS",
}
