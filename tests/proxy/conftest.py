"""Fixtures of the proxy tests: the real auth service and a real proxy on the test's broker."""
from __future__ import annotations

import sys

import pytest

from tests.proxy.support import Stack
from tests.support.broker import Subscriber
from tests.support.proc import wait_until


@pytest.fixture
def stack(config, config_env, procs, broker, tmp_path):
    """Broker + auth + monitor subscribed to medsec/#; call stack.start_proxy() to add a proxy."""
    procs.start("auth", [sys.executable, "-m", "services.auth"], env=config_env)
    wait_until(lambda: config.auth_socket.exists(), 10, what="auth socket")
    monitor = Subscriber(config, "monitor")
    monitor.subscribe("medsec/#")
    s = Stack(config, config_env, procs, tmp_path / "proclogs", monitor)
    yield s
    monitor.close()


@pytest.fixture
def proxy(stack):
    stack.start_proxy()
    return stack
