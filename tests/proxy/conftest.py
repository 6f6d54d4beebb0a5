"""Fixtures of the proxy tests: the real auth service and a real proxy on the test's broker."""
from __future__ import annotations

import sys

import pytest

from services.common.config import Config
from tests.proxy.support import Stack
from tests.support.broker import Subscriber, broker_under
from tests.support.proc import Processes, wait_ready, wait_until


def _start(config: Config, env: dict[str, str], procs: Processes, log_dir) -> Stack:
    procs.start("auth", [sys.executable, "-m", "services.auth"], env=env)
    wait_until(lambda: config.auth_socket.exists(), 10, what="auth socket")
    monitor = Subscriber(config, "monitor")
    monitor.subscribe("medsec/#")
    return Stack(config, env, procs, log_dir, monitor)


@pytest.fixture
def stack(config, config_env, procs, broker, tmp_path):
    """Broker + auth + monitor subscribed to medsec/#; call stack.start_proxy() to add a proxy."""
    s = _start(config, config_env, procs, tmp_path / "proclogs")
    yield s
    s.monitor.close()


@pytest.fixture
def publisher(stack):
    """The real publisher on the stack's broker; yields a dashboard client subscribed to Pico/#."""
    proc = stack.procs.start("publisher", [sys.executable, "-m", "services.publisher"], env=stack.env)
    wait_ready(proc, stack.log_dir / "publisher.log", lambda text: "bus_subscribed" in text, 10,
               what="publisher to subscribe")
    dashboard = Subscriber(stack.config, "dashboard")
    dashboard.subscribe("Pico/#")
    yield dashboard
    dashboard.close()


@pytest.fixture
def proxy(stack):
    stack.start_proxy()
    return stack


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory):
    """One broker + auth + proxy for a whole module of tests that use unique device ids."""
    tmp = tmp_path_factory.mktemp("shared-proxy")
    with broker_under(tmp) as (config, procs, _):
        s = _start(config, config.to_env(), procs, tmp / "proclogs")
        s.start_proxy()
        yield s
        s.monitor.close()


@pytest.fixture
def shared_proxy(shared_stack):
    """The module's stack, with a fresh monitor and log view for this test."""
    shared_stack.fresh()
    return shared_stack
