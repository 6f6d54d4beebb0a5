import pytest

from tests.support.stack import kill_all, medsec, supervised_pids


@pytest.fixture
def stack(config, config_env):
    """A whole stack (no Node-RED) started with `medsec up --detach`; always torn down."""
    medsec(config_env, "up", "--detach", "--no-nodered")
    pids = supervised_pids(config)
    yield config
    medsec(config_env, "down", check=False)
    kill_all(pids)
