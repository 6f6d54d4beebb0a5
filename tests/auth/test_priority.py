"""Auth runs MEDSEC_AUTH_PRIORITY nice levels above the process that started it, where it may
(services/auth/server.py raise_priority); where it may not, it says so and serves all the same."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from services.keystore.credentials import make_secret
from services.keystore.models import NewDevice
from tests.auth.test_bursts import GOOD
from tests.auth.wire import AuthClient, encrypt
from tests.support.proc import wait_until
from tests.support.stores import start_auth


def nice_levels(pid: int) -> set[int]:
    """The nice level of each of the process's threads (on Linux a nice level is a thread's)."""
    levels = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        levels.add(int(stat.rsplit(")", 1)[1].split()[16]))  # field 19 of proc(5): nice
    return levels


def serves(store, state) -> bool:
    secret = make_secret("v1")
    store.add(NewDevice("prio-1", "v1", secret))
    answer = AuthClient(state.auth_socket).reading(1, encrypt(secret["key"], secret["iv"], GOOD))
    return answer["status"] == "ok" and answer["device"] == "prio-1"


def log_of(procs) -> str:
    return (procs.log_dir / "auth.log").read_text()


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="raising a priority needs root (CAP_SYS_NICE)")


@needs_root
def test_auth_runs_ten_nice_levels_above_its_parent_by_default(store, state, config_env, procs):
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    proc = start_auth(procs, state, config_env)
    assert serves(store, state)  # its threads (the store's, if any) started after the change
    assert nice_levels(proc.pid) == {max(-20, ours - 10)}
    assert "event=priority_raised" in log_of(procs)


@needs_root
def test_auth_priority_is_a_setting_and_zero_leaves_it_alone(store, state, config_env, procs):
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    proc = start_auth(procs, state, {**config_env, "MEDSEC_AUTH_PRIORITY": "0"})
    assert serves(store, state)
    assert nice_levels(proc.pid) == {ours}
    assert "event=priority" not in log_of(procs)


@needs_root
def test_auth_priority_from_a_niced_parent_is_relative(store, state, config_env, procs):
    """An operator who starts the stack at nice 5 keeps auth 3 levels above it, not at a fixed level."""
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    proc = start_auth(procs, state, {**config_env, "MEDSEC_AUTH_PRIORITY": "3"},
                      ["nice", "-n", str(5 - ours)])
    assert serves(store, state)
    assert nice_levels(proc.pid) == {2}


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_auth_without_the_right_to_raise_it_says_so_and_serves(store, state, config_env, procs):
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    # As root, setpriv drops CAP_SYS_NICE from what auth may ever hold; as anyone else it has none.
    prefix = ["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice"] if os.geteuid() == 0 else []
    proc = start_auth(procs, state, config_env, prefix)
    assert serves(store, state)
    assert nice_levels(proc.pid) == {ours}
    wait_until(lambda: "event=priority_not_raised" in log_of(procs), 5, what="the log line")
    assert "Traceback" not in log_of(procs)


@pytest.mark.parametrize("value", ["-1", "40", "ten"])
def test_a_bad_auth_priority_is_refused_at_start(state, config_env, procs, value):
    proc = procs.start("auth", [sys.executable, "-m", "services.auth"],
                       env={**config_env, "MEDSEC_AUTH_PRIORITY": value})
    assert proc.wait(10) != 0
    text = log_of(procs)
    assert "MEDSEC_AUTH_PRIORITY" in text and "Traceback" not in text
