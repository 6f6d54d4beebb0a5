"""`medsec compose-init`, `medsec healthcheck`, `medsec haproxy-config`: the container path.

compose-init fills a deploy directory (default ./deploy, what compose.yaml reads
through ${MEDSEC_DEPLOY:-./deploy}) with everything a `docker compose up` needs
and nothing the repository may hold: secrets, the EMQX bootstrap and acl.conf,
TLS certificates for 8883. It is idempotent: secrets and certificates that exist
are kept, generated (non-secret) files are rewritten.

Permissions: the deploy directory is 0700, so nobody else on the host can enter
it. The files inside are 0644 because docker-compose bind-mounts them as they
are into containers that run as their own non-root users; the 0700 directory is
what keeps them private. The CA key, which no container needs, stays 0600.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from services.broker import emqx
from services.broker.dynsec_admin import ADMIN_ACCOUNT
from services.cli.errors import CliError
from services.common.accounts import ACCOUNTS
from services.common.config import Config
from services.common.state import SERVICE_TOKENS, hash_token

DEFAULT_DIR = "deploy"
# brokeradmin drives Mosquitto's dynamic-security plugin; EMQX has its REST API (emqx_api_key) instead.
EMQX_ACCOUNTS = tuple(a for a in ACCOUNTS if a != ADMIN_ACCOUNT)
CERT_DAYS = 825
# Host names the 8883 certificate is valid for, besides any --hostname given.
CERT_NAMES = ("localhost", "emqx1.medsec", "emqx2.medsec", "emqx", "lb")


def register(sub: argparse._SubParsersAction) -> None:
    init = sub.add_parser("compose-init", help="generate secrets, EMQX files and TLS certs for compose.yaml")
    init.add_argument("--dir", default=os.environ.get("MEDSEC_DEPLOY", DEFAULT_DIR),
                      help="deploy directory (default: $MEDSEC_DEPLOY or ./deploy)")
    init.add_argument("--hostname", action="append", default=[],
                      help="extra DNS name for the 8883 certificate (repeatable)")
    init.set_defaults(func=cmd_compose_init)

    health = sub.add_parser("healthcheck", help="exit 0 when SERVICE answers (container healthchecks)")
    health.add_argument("service", nargs="?", default=os.environ.get("MEDSEC_SERVICE", ""))
    health.set_defaults(func=cmd_healthcheck)

    lb = sub.add_parser("haproxy-config", help="print an HAProxy config for local proxy instances")
    lb.add_argument("--listen", required=True, help="host:port devices connect to")
    lb.add_argument("--proxy", action="append", required=True, metavar="HOST:PORT",
                    help="a proxy instance (repeatable)")
    lb.add_argument("--maxconn", type=int, default=8000, help="devices at once (2 fds each)")
    lb.add_argument("--no-proxy-protocol", action="store_true",
                    help="do not send the PROXY v2 header (then the proxies see only the balancer's address)")
    lb.set_defaults(func=cmd_haproxy_config)


# --- compose-init ---

@dataclass
class InitReport:
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _secret(path: Path, make, report: InitReport, mode: int = 0o644) -> bytes:
    """Keep an existing secret; generate it once otherwise."""
    if path.exists() and path.stat().st_size > 0:
        report.kept.append(path.name)
        os.chmod(path, mode)
        return path.read_bytes()
    data = make()
    _write(path, data, mode)
    report.created.append(path.name)
    return data


def _password() -> bytes:
    return secrets.token_urlsafe(24).encode()


def _env_file(values: dict[str, str]) -> bytes:
    return "".join(f"{k}={v}\n" for k, v in values.items()).encode()


def _parse_env(data: bytes) -> dict[str, str]:
    out = {}
    for line in data.decode().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _token(path: Path, report: InitReport) -> None:
    token = _secret(path, lambda: secrets.token_urlsafe(32).encode() + b"\n", report)
    expected_hash = hash_token(token.decode().strip()).encode() + b"\n"
    hash_path = path.with_name(path.name + ".sha256")
    if not hash_path.exists() or hash_path.read_bytes() != expected_hash:
        _write(hash_path, expected_hash, 0o644)
        report.created.append(hash_path.name)


def init_deploy(directory: Path, hostnames: list[str] | None = None) -> InitReport:
    report = InitReport()
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    # Secrets live here: keep the whole directory out of any git checkout it is created in.
    ignore = directory / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    sec = directory / "secrets"
    sec.mkdir(exist_ok=True)
    os.chmod(sec, 0o700)

    _secret(sec / "master.key", lambda: secrets.token_bytes(32), report)
    # The operator's admin token, and the scoped ones of Node-RED (read, manage) and dispatch
    # (stations:read): keyadmin gets only their SHA-256 files, each holder only its own value.
    for name in ("admin", *SERVICE_TOKENS):
        _token(sec / f"{name}.token", report)
    # Every account's password (brokeradmin too: the single-host Mosquitto's plugin admin); EMQX's
    # bootstrap gets all but brokeradmin.
    every = {a: _secret(sec / f"mqtt_{a}", _password, report).decode() for a in ACCOUNTS}
    passwords = {a: every[a] for a in EMQX_ACCOUNTS}
    # The key store's database password (compose.single.yaml's PostgreSQL).
    _secret(sec / "postgres_password", _password, report)
    _secret(sec / "history_db_password", _password, report)  # the reading history's database
    _secret(sec / "nodered_editor_password", _password, report)  # the Node-RED login `admin`
    # Node-RED's dashboard logins `viewer` and `operator` (nodered/tools/render-settings.js).
    _secret(sec / "nodered_viewer_password", _password, report)
    _secret(sec / "nodered_operator_password", _password, report)
    # EMQX's REST API key, "key:secret": EMQX reads it as its api_key bootstrap file, keyadmin
    # uses it to add station logins.
    _secret(sec / "emqx_api_key", lambda: b"medsec-keyadmin:" + secrets.token_urlsafe(32).encode(), report)
    _secret(sec / "nodered_credential_secret", lambda: secrets.token_hex(32).encode(), report)

    env_path = sec / "emqx.env"
    env = _parse_env(env_path.read_bytes()) if env_path.exists() else {}
    wanted = {
        # Erlang distribution cookie: whoever has it controls the cluster.
        "EMQX_NODE__COOKIE": lambda: secrets.token_urlsafe(32),
        # Replaces EMQX's well-known dashboard default ("public").
        "EMQX_DASHBOARD__DEFAULT_PASSWORD": lambda: secrets.token_urlsafe(24),
    }
    missing = [k for k in wanted if not env.get(k)]
    for key in missing:
        env[key] = wanted[key]()
    if missing or not env_path.exists():
        _write(env_path, _env_file(env), 0o644)
        report.created.append(env_path.name)
    else:
        report.kept.append(env_path.name)

    _write_emqx(directory / "emqx", passwords, report)
    _write_tls(directory / "tls", list(CERT_NAMES) + list(hostnames or []), report)
    _write_cli_home(directory / "cli", (sec / "admin.token").read_text().strip(), every)
    return report


def _write_cli_home(home: Path, token: str, passwords: dict[str, str]) -> None:
    """A state dir for the medsec CLI on the host (MEDSEC_HOME=<deploy>/cli): `medsec device ...`,
    `medsec sim --register`, `medsec audit verify` reach the published endpoints with the admin
    token and the read-only logins (dashboard, monitor), 0600 as the CLI requires."""
    sec = home / "secrets"
    sec.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    os.chmod(sec, 0o700)
    _write(sec / "admin.token", token.encode() + b"\n", 0o600)
    host_logins = {a: passwords[a] for a in ("dashboard", "monitor") if a in passwords}
    _write(sec / "mqtt-passwords.json", json.dumps(host_logins).encode(), 0o600)


def _bootstrap_current(path: Path, passwords: dict[str, str]) -> bool:
    """True when the bootstrap file already holds exactly these passwords (keep its salts)."""
    if not path.exists():
        return False
    rows = {}
    for line in path.read_text().splitlines()[1:]:
        user, digest, salt, _ = line.split(",")
        rows[user] = (digest, salt)
    return set(rows) == set(passwords) and all(
        emqx.password_hash(passwords[u], rows[u][1])[0] == rows[u][0] for u in rows)


def _write_emqx(directory: Path, passwords: dict[str, str], report: InitReport) -> None:
    bootstrap = directory / emqx.BOOTSTRAP_NAME
    if _bootstrap_current(bootstrap, passwords):
        keep = bootstrap.read_text()
        emqx.write_emqx_files(directory, passwords)
        bootstrap.write_text(keep)
        report.kept.append(bootstrap.name)
    else:
        emqx.write_emqx_files(directory, passwords)
        report.created.append(bootstrap.name)


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise CliError("openssl is needed to make the TLS certificates (apt-get install openssl), "
                       "or put your own ca.pem, server.pem and server.key into the tls/ directory")
    result = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CliError(f"openssl {args[0]} failed: {result.stderr.strip().splitlines()[-1:]}")


def _write_tls(directory: Path, names: list[str], report: InitReport) -> None:
    """A private CA and a server certificate for 8883, unless certificates are there (made or supplied)."""
    directory.mkdir(exist_ok=True)
    os.chmod(directory, 0o755)
    ca_key, ca, key, cert = (directory / n for n in ("ca.key", "ca.pem", "server.key", "server.pem"))
    if ca.exists() and key.exists() and cert.exists():
        report.kept.append("tls")
        return
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        if not (ca_key.exists() and ca.exists()):
            _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", str(t / "ca.key"), "-out", str(t / "ca.pem"), "-days", str(CERT_DAYS * 4),
                     "-subj", "/CN=medsec private CA", "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign")
            _write(ca_key, (t / "ca.key").read_bytes(), 0o600)
            _write(ca, (t / "ca.pem").read_bytes(), 0o644)
        san = ",".join(f"DNS:{n}" for n in dict.fromkeys(names)) + ",IP:127.0.0.1"
        ext = t / "ext.cnf"
        ext.write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
                       "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", str(t / "server.key"), "-out", str(t / "server.csr"),
                 "-subj", "/CN=medsec broker")
        _openssl("x509", "-req", "-in", str(t / "server.csr"), "-CA", str(ca), "-CAkey", str(ca_key),
                 "-set_serial", f"0x{secrets.token_hex(16)}", "-out", str(t / "server.pem"),
                 "-days", str(CERT_DAYS), "-extfile", str(ext))
        # 0644: the EMQX container's user reads it through the bind mount; the 0700 deploy dir guards it.
        _write(key, (t / "server.key").read_bytes(), 0o644)
        _write(cert, (t / "server.pem").read_bytes(), 0o644)
    report.created.append("tls")


def cmd_compose_init(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    try:
        report = init_deploy(directory, args.hostname)
    except OSError as exc:
        raise CliError(f"cannot write {directory}: {exc.strerror or exc}") from None
    print(f"deploy directory: {directory}")
    if report.created:
        print("created: " + ", ".join(report.created))
    if report.kept:
        print("kept:    " + ", ".join(report.kept))
    print(f"admin token: {directory / 'secrets' / 'admin.token'}")
    print(f"CLI on this host (medsec device/sim/audit): export MEDSEC_HOME={directory / 'cli'}")
    print(f"start (one host): MEDSEC_DEPLOY={directory} docker-compose -f compose.single.yaml up -d")
    print(f"start (EMQX):     MEDSEC_DEPLOY={directory} docker-compose up -d")
    return 0


# --- healthcheck ---

def _tcp(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _unix(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(str(path))
            return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


# The publisher and history rewrite their metrics files every 2 s: older than this, they are stuck.
METRICS_FRESH = 10.0


def bus_serving(service: str, metrics: Path, now: float | None = None) -> bool:
    """For a service with no port (publisher, history): its metrics file is fresh and says it is
    connected to the broker."""
    try:
        fresh = (time.time() if now is None else now) - metrics.stat().st_mtime <= METRICS_FRESH
        return fresh and f"medsec_{service}_bus_connected 1" in metrics.read_text().splitlines()
    except OSError:
        return False


def healthy(service: str, config: Config) -> bool:
    """What 'up' means per service: it answers where its clients reach it."""
    local = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
    checks = {
        "auth": lambda: _unix(config.auth_socket),
        "proxy": lambda: _tcp(local, config.proxy_port),
        "keyadmin": lambda: _http_ok(f"http://{local}:{config.admin_port}/api/v1/healthz"),
        "publisher": lambda: bus_serving("publisher", config.run_dir / "metrics-publisher.prom"),
        "history": lambda: bus_serving("history", config.run_dir / "metrics-history.prom"),
        # No listening port: healthy when its broker is reachable (paho reconnects by itself).
        "dispatch": lambda: _tcp(config.broker_host, config.mqtt_port),
        # The single-host Mosquitto (compose.single.yaml): its plain listener accepts connections.
        "broker": lambda: _tcp(local, config.mqtt_port),
    }
    if service not in checks:
        raise CliError(f"unknown service {service!r}; one of: {', '.join(sorted(checks))}", 2)
    return bool(checks[service]())


def cmd_healthcheck(args: argparse.Namespace) -> int:
    if not args.service:
        raise CliError("name a service (or set MEDSEC_SERVICE)", 2)
    ok = healthy(args.service, Config.from_env())
    print("healthy" if ok else "unhealthy")
    return 0 if ok else 1


# --- haproxy ---

def haproxy_config(listen: str, proxies: list[str], stats_socket: str | None = None,
                   maxconn: int = 8000, proxy_protocol: bool = True) -> str:
    """TCP load balancing of devices over proxy instances; a dead instance leaves within ~1 s.

    HAProxy needs two descriptors per connection: maxconn must fit the open-file limit.
    With proxy_protocol each connection starts with a PROXY v2 header naming the device's
    address (the proxies need MEDSEC_PROXY_PROTOCOL=1), so throttling sees devices, not HAProxy."""
    lines = [
        "# Generated by medsec haproxy-config.",
        "# The proxies behind it need MEDSEC_PROXY_PROTOCOL=1." if proxy_protocol else
        "# No PROXY header: the proxies see (and throttle) this balancer's address.",
        "global",
        f"    maxconn {maxconn}",
    ]
    if stats_socket:
        lines.append(f"    stats socket {stats_socket} mode 600 level admin")
    lines += [
        "defaults",
        "    mode tcp",
        "    timeout connect 2s",
        # Devices may be quiet for the proxy's idle timeout; the proxy closes idle ones itself.
        "    timeout client 5m",
        "    timeout server 5m",
        "    option redispatch",
        "    retries 2",
        "frontend devices",
        f"    bind {listen}",
        "    default_backend proxies",
        "backend proxies",
        "    balance leastconn",
        # Connections to a server that went down are cut, so devices reconnect to a live one.
        "    default-server inter 300ms fall 2 rise 2 on-marked-down shutdown-sessions",
    ]
    send = " send-proxy-v2" if proxy_protocol else ""
    for n, addr in enumerate(proxies, 1):
        lines.append(f"    server proxy{n} {addr} check{send}")
    return "\n".join(lines) + "\n"


def cmd_haproxy_config(args: argparse.Namespace) -> int:
    print(haproxy_config(args.listen, args.proxy, maxconn=args.maxconn,
                         proxy_protocol=not args.no_proxy_protocol), end="")
    return 0

