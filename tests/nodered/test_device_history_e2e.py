"""Issue 17, dashboard: the Device page shows the previous hour from history right after it opens,
offers 1 h / 24 h / 7 d, and each viewer's choice of device is their own.

The whole stack with Node-RED (`medsec up --detach`, the history service under supervisord), two
registered devices that do not stream, and an hour of readings injected through the history store
as if the history service had stored them."""
from __future__ import annotations

import time

from services.history.readings import Row
from services.history.store import open_history
from services.nodered import login_password
from tests.support.proc import wait_until
from tests.support.stack import api, kill_all, medsec, supervised_pids

from .test_dashboard_e2e import Probe, pytestmark  # noqa: F401  (same skips: Node-RED, Chromium)

VALUES = (36.6, 31.2, 1.65, 0.01, -0.02, 0.98, 30.5)


def test_device_page_opens_on_the_last_hour_per_viewer(config, config_env, tmp_path):
    probe = Probe()
    pids: list[int] = []
    try:
        medsec(config_env, "up", "--detach", timeout=120)
        pids = supervised_pids(config)
        for device in ("hist-a", "hist-b"):
            assert api(config, "POST", "/devices", {"id": device, "protocol": "v2"})[0] == 201
        wait_until(config.history_path.exists, 30, what="the history service's store")
        now = time.time()
        # hist-a: a reading every 5 s over the last hour (and one 2 h ago, outside the hour);
        # hist-b: a reading every 30 s over the last 20 minutes.
        a = [Row("hist-a", now - 3590 + 5 * i, i, "v2", (36.0 + (i % 20) / 10, *VALUES[1:]))
             for i in range(700)]
        b = [Row("hist-b", now - 1200 + 30 * i, i, "v2", VALUES) for i in range(40)]
        old = [Row("hist-a", now - 7200, 10_000, "v2", VALUES)]
        store = open_history(config)
        try:
            store.add(a + b + old)
        finally:
            store.close()
        base = f"http://{config.host}:{config.nodered_port}/dashboard"
        viewer = login_password(config, "viewer")

        # Opening the page: the first device is chosen and its last hour is drawn, at once.
        opened = time.monotonic()
        probe.call("viewer", name="one", url=f"{base}/device", user="viewer", password=viewer)
        first = probe.call("view", name="one", device="hist-a")
        assert time.monotonic() - opened < 30
        assert first["span"] == "1 h" and first["history"] == 700, first
        for chart in ("pulse", "temp", "accel", "internal"):
            assert first["charts"][chart]["points"] == 700, first["charts"][chart]
            assert abs(first["charts"][chart]["first"] - a[0].ts) < 1e-3
            assert all(n >= 300 for n in first["charts"][chart]["drawn"]), first["charts"][chart]
        assert len(first["charts"]["accel"]["drawn"]) == 3

        # A second viewer picks hist-b; the first viewer's page stays on hist-a.
        probe.call("viewer", name="two", url=f"{base}/device", user="operator",
                   password=login_password(config, "operator"))
        second = probe.call("view", name="two", select="hist-b", device="hist-b")
        assert second["history"] == 40 and second["charts"]["temp"]["points"] == 40, second
        again = probe.call("view", name="one", device="hist-a")
        assert again["device"] == "hist-a" and again["charts"]["temp"]["points"] == 700, again

        # 24 h: per-minute means, and the reading of two hours ago is in range now.
        day = probe.call("view", name="one", span="24 h", device="hist-a")
        assert day["span"] == "24 h" and day["loaded"] == "hist-a 24 h", day
        minutes = {int(r.ts // 60) for r in a + old}
        assert day["history"] == len(minutes), (day["history"], len(minutes))
        week = probe.call("view", name="one", span="7 d", device="hist-a")
        assert week["history"] == len(minutes)
        probe.call("screenshot", path=str(tmp_path / "device-history.png"), tab="one")
    finally:
        probe.close()
        medsec(config_env, "down", check=False)
        kill_all(pids)
