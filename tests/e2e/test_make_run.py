"""Issue 2 "Done when" 1: what `make run` does (`medsec up --demo 3` in the foreground), then Ctrl-C."""
import os
import signal
import subprocess
import threading

from tests.support.broker import Subscriber
from tests.support.proc import wait_until
from tests.support.stack import MEDSEC, alive, kill_all, medsec, supervised_pids
from tests.support.topics import LEGACY

EXPECTED_SUFFIXES = set(LEGACY) | {
    "Ip_address", "Port_address", "Internal_Server/Ip_address", "Internal_Server/Port_address",
    "json", "status",
}


def test_up_with_demo_devices_then_ctrl_c_leaves_nothing(config, config_env):
    proc = subprocess.Popen(
        MEDSEC + ["up", "--demo", "3"], env={**os.environ, **config_env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True).start()
    pids: list[int] = []
    try:
        wait_until(lambda: any("Ctrl-C" in line for line in output), 90, what=f"the banner: {output}")
        banner = "".join(output)
        assert f"{config.host}:{config.proxy_port}" in banner
        assert "admin token" in banner
        pids = supervised_pids(config)

        dash = Subscriber(config, "dashboard")
        dash.subscribe("Pico/#")

        def devices_complete() -> set[str]:
            by_device: dict[str, set[str]] = {}
            for topic in dash.topics():
                _, device, suffix = topic.split("/", 2)
                by_device.setdefault(device, set()).add(suffix)
            return {d for d, suffixes in by_device.items() if suffixes >= EXPECTED_SUFFIXES}

        complete = wait_until(lambda: len(devices_complete()) >= 3 and devices_complete(), 60,
                              what="3 demo devices on every public topic")
        assert len(complete) == 3
        for device in complete:
            assert dash.on(f"Pico/{device}/status")[-1] == b"online"
        dash.close()
        pids = supervised_pids(config)

        def status() -> str:
            return medsec(config_env, "status").stdout

        shown = wait_until(lambda: "devices connected: 3" in status() and status(), 20,
                           what="medsec status to count the demo devices")
        running = {line.split()[0] for line in shown.splitlines() if "RUNNING" in line}
        assert {"mosquitto", "auth", "keyadmin", "proxy", "publisher", "demo"} <= running, shown
        rate = float(shown.split("readings/s:")[1].split()[0])
        assert 1.0 <= rate <= 10.0, shown  # 3 devices at 1 Hz

        proc.send_signal(signal.SIGINT)  # what Ctrl-C does to the foreground process
        assert proc.wait(60) == 0, "".join(output)
        wait_until(lambda: not any(alive(p) for p in pids), 20, what="every process to exit after Ctrl-C")
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_all(pids)
