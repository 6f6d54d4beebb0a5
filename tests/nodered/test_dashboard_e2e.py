"""Issue 6, done-when 2: the whole stack with Node-RED and 3 simulated devices, the dashboard in
headless Chromium. All three devices show live values; a fourth registered through the API appears
without any flow change; revoking one turns it offline on the page.
Issue 15: the operator adds and revokes from the Devices page, the viewer sees Fleet, Device and
Alerts but not Devices, and the stack's Node-RED process cannot open secrets/master.key."""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from services.nodered import login_password, osuser
from services.nodered.runtime import NODERED_DIR
from tests.proxy.support import connect, reading
from tests.support.proc import wait_until
from tests.support.stack import MEDSEC, api, kill_all, medsec, supervised_pids

from .support import needs_nodered

PLAYWRIGHT = NODERED_DIR / "node_modules" / "playwright-core"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PROBE = Path(__file__).with_name("dashboard_probe.mjs")
# Set to a path (e.g. docs/img/dashboard.png) to keep the fleet page's screenshot.
SCREENSHOT = os.environ.get("MEDSEC_DASHBOARD_SCREENSHOT")

pytestmark = [
    needs_nodered,
    pytest.mark.skipif(not PLAYWRIGHT.exists() or not shutil.which(CHROMIUM),
                       reason="needs playwright-core (make -C nodered install) and chromium"),
]


class Probe:
    """dashboard_probe.mjs: one JSON command in, one JSON answer out."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["node", str(PROBE), str(PLAYWRIGHT)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.answers: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.answers.put(line) for line in self.proc.stdout],
                         daemon=True).start()

    def call(self, cmd: str, timeout: float = 40, **args):
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        try:
            answer = json.loads(self.answers.get(timeout=timeout))
        except queue.Empty:
            raise AssertionError(f"the browser did not answer {cmd} within {timeout}s") from None
        if not answer["ok"]:
            raise AssertionError(f"{cmd}: {answer['error']}")
        return answer["result"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def cards(probe: Probe) -> dict[str, dict]:
    return {c["device"]: c for c in probe.call("fleet")}


def live(card: dict | None) -> bool:
    return bool(card and card["status"] == "online" and card["temp"] and card["temp"] != "- °C")


def node_red_pid(pids: list[int]) -> int:
    """Node-RED renames its process (process.title): "node-red" replaces the command line."""
    return next(pid for pid in pids if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] in
                (b"node-red", b"node"))


def open_as(pid: int, path: Path) -> subprocess.CompletedProcess:
    """Open a file as the uid and gid the running Node-RED process has (read from /proc)."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    ids = {line.split(":")[0]: line.split()[1] for line in status if line.startswith(("Uid:", "Gid:"))}
    return subprocess.run(["setpriv", f"--reuid={ids['Uid']}", f"--regid={ids['Gid']}", "--clear-groups",
                           sys.executable, "-c", f"open({str(path)!r}, 'rb').read(1)"],
                          capture_output=True, text=True, timeout=30)


def test_dashboard_follows_the_fleet(config, config_env, procs, tmp_path):
    probe = Probe()  # Chromium starts while the stack does
    pids: list[int] = []
    try:
        medsec(config_env, "up", "--detach", "--demo", "3", timeout=120)
        pids = supervised_pids(config)
        base = f"http://{config.host}:{config.nodered_port}/dashboard"
        probe.call("open", url=f"{base}/fleet", user="operator", password=login_password(config, "operator"))

        # Node-RED runs as its own user, who cannot open the key store's master key.
        if osuser.needed():
            nr = node_red_pid(pids)
            assert Path(f"/proc/{nr}/status").stat().st_uid != 0
            denied = open_as(nr, config.master_key_path)
            assert denied.returncode != 0 and "PermissionError" in denied.stderr, denied.stderr
            assert "PermissionError" in open_as(nr, config.keystore_path).stderr
            assert open_as(nr, config.home / "nodered" / "secrets.json").returncode == 0

        # Three demo devices, with values that change: live, not a snapshot.
        demo = ["sim-001", "sim-002", "sim-003"]
        first = wait_until(lambda: (c := cards(probe)) and all(live(c.get(d)) for d in demo) and c, 60,
                           what="3 demo devices online with values on the fleet page")
        wait_until(lambda: any(cards(probe)[d]["pulse"] != first[d]["pulse"] for d in demo), 20,
                   what="a reading to update a card")

        # A fourth device, registered through the key-admin API by the simulator, appears by itself.
        sim4 = ["sim", "--devices", "1", "--prefix", "e2e4-", "--register", "--rate", "2"]
        procs.start("sim4", MEDSEC + sim4, env=config_env)
        wait_until(lambda: live(cards(probe).get("e2e4-001")), 60, what="the fourth device on the page")
        status, body = api(config, "GET", "/devices/e2e4-001")
        assert status == 200 and body["id"] == "e2e4-001"

        # The device page: choose a device in the dropdown, its charts follow.
        page = probe.call("device", url=f"{base}/device", id="e2e4-001")
        assert page["device"] == "e2e4-001" and page["temp"].endswith("°C")
        assert page["charts"] >= 4

        # The Devices page adds a device through `medsec devices` and the real key-admin API: the
        # credentials are shown once, there; then revokes it.
        admin_url = f"{base}/devices"
        probe.call("watch", url=admin_url, user="admin", password=login_password(config, "admin"))
        added = probe.call("admin", url=admin_url, action="add", id="e2e-page-1", protocol="v2")
        assert "error" not in added, added
        secret = json.loads(added["secret"])
        assert secret["id"] == "e2e-page-1" and set(secret) - {"id", "protocol"}, secret
        status, body = api(config, "GET", "/devices/e2e-page-1")
        assert status == 200 and body["protocol"] == "v2"
        # Another session on the Devices page sees the new device, never its credentials.
        other = wait_until(lambda: (w := probe.call("watched")) and ["e2e-page-1", "active"] in w["rows"]
                           and w, 30, what="the new device on the other session's Devices page")
        assert other["secret"] is None, other
        listed = json.dumps(api(config, "GET", "/devices")[1])
        public = ("id", "protocol", "integrity")  # integrity: "ok" | "failed", not a secret
        assert not [v for k, v in secret.items() if k not in public and str(v) in listed]
        revoked = probe.call("admin", url=admin_url, action="revoke", id="e2e-page-1")
        assert revoked["state"] == "revoked" and revoked["secret"] is None, revoked
        assert api(config, "GET", "/devices/e2e-page-1")[1]["state"] == "revoked"
        unknown = probe.call("admin", url=admin_url, action="rotate", id="no-such-device")
        assert "no-such-device" in unknown.get("error", ""), unknown

        # Revoking a device turns it offline on the page (and marks it revoked).
        probe.call("fleet_page", url=f"{base}/fleet")
        status, _ = api(config, "DELETE", "/devices/sim-002")
        assert status == 200
        wait_until(lambda: cards(probe)["sim-002"]["status"] == "offline", 20,
                   what="sim-002 offline on the page")
        wait_until(lambda: cards(probe)["sim-002"]["state"] == "revoked", 20, what="sim-002 marked revoked")
        wait_until(lambda: "offline" in cards(probe)["sim-002"]["alerts"], 20, what="the offline alert")
        now = cards(probe)
        assert live(now["sim-001"]) and live(now["sim-003"]) and live(now["e2e4-001"]), now

        # One device on two connections from two addresses (a replay of sniffed v1 traffic, or a
        # clone): the gateway's duplicate_session alert reaches the Alerts page (issue 14, item 3).
        key, iv = "Twice-0123456789", "Twice-IV-0123456"
        status, _ = api(config, "POST", "/devices",
                        {"id": "e2e-twice", "protocol": "v1", "key": key, "iv": iv})
        assert status == 201
        twice = [connect(config.proxy_port, source) for source in ("127.0.0.1", "127.0.0.2")]
        for n, sock in enumerate(twice):
            sock.sendall(reading(key, iv, n))

        def both_logged(a: dict) -> bool:  # the log table renders after the open list
            return (any("sim-002" in row and "offline" in row for row in a["log"])
                    and any("e2e-twice" in row and "duplicate_session" in row for row in a["log"]))

        alerts = wait_until(lambda: (a := probe.call("alerts", url=f"{base}/alerts"))
                            and ["e2e-twice", "duplicate_session"] in a["open"] and both_logged(a) and a, 30,
                            what="the duplicate-session alert on the Alerts page, open and logged")
        assert ["sim-002", "offline"] in alerts["open"], alerts
        for sock in twice:
            sock.close()
        probe.call("fleet_page", url=f"{base}/fleet")

        # The viewer: Fleet, Device and Alerts, not the Devices page (neither its URL nor its link).
        seen = probe.call("visit", url=base, user="viewer", password=login_password(config, "viewer"),
                          pages=["fleet", "device", "alerts", "devices"])
        assert seen["status"] == {"fleet": 200, "device": 200, "alerts": 200, "devices": 403}, seen
        assert sorted(seen["nav"]) == ["Alerts", "Device", "Fleet"], seen
        admin = probe.call("visit", url=base, user="admin", password=login_password(config, "admin"),
                           pages=["fleet", "devices"])
        assert admin["status"] == {"fleet": 200, "devices": 200} and "Devices" in admin["nav"], admin

        shot = Path(SCREENSHOT) if SCREENSHOT else tmp_path / "dashboard.png"
        probe.call("screenshot", path=str(shot.resolve()))
        device_shot = shot.with_name(shot.stem + "-device.png")
        probe.call("screenshot", path=str(device_shot.resolve()), tab="device")
        for png in (shot, device_shot):
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # Node-RED never needed a flow change: the flows file is the shipped one.
        shipped = json.loads((NODERED_DIR / "flows.json").read_text())
        assert json.loads((config.home / "nodered" / "flows.json").read_text()) == shipped
    finally:
        probe.close()
        medsec(config_env, "down", check=False)
        kill_all(pids)
