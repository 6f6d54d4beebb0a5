"""A real HAProxy in front of proxy instances, with the config `medsec haproxy-config` prints."""
from __future__ import annotations

import csv
import io
import shutil
import socket
from pathlib import Path

from services.cli.cmd_compose import haproxy_config
from tests.support.proc import free_port, port_open, wait_until


def haproxy_binary() -> str | None:
    found = shutil.which("haproxy") or "/usr/sbin/haproxy"  # root's PATH has sbin, others may not
    return found if Path(found).exists() else None


class HAProxy:
    def __init__(self, procs, tmp_path: Path, backends: list[int], proxy_protocol: bool = True) -> None:
        self.port = free_port()
        self.stats = tmp_path / "haproxy.sock"
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(haproxy_config(f"127.0.0.1:{self.port}", [f"127.0.0.1:{p}" for p in backends],
                                      stats_socket=str(self.stats), proxy_protocol=proxy_protocol))
        self.proc = procs.start("haproxy", [haproxy_binary() or "haproxy", "-db", "-f", str(cfg)])
        wait_until(lambda: port_open(self.port) and self.stats.exists(), 10, what="haproxy")

    def sessions(self) -> dict[str, tuple[str, int]]:
        """server -> (status, current sessions), from the stats socket."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.stats))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
        return {r["svname"]: (r["status"], int(r["scur"] or 0)) for r in rows
                if r["pxname"] == "proxies" and r["svname"].startswith("proxy")}
