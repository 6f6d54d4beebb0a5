"""Auth's Prometheus text file (run/metrics-auth.prom), written once a second."""
from __future__ import annotations

from services.keystore.credentials import make_secret
from services.keystore.models import NewDevice
from services.stack.metrics import parse_prometheus
from tests.auth.wire import AuthClient, encrypt
from tests.support.proc import wait_until

GOOD = '{"Temp":"36.600","TempMcu":"23.700","PulseSig":"2.123","Acel_x":"0.000","Acel_y":"0.000",' \
       '"Acel_z":"0.000","TempMpu":"23.400"}'


def test_metrics_file_counts_accepted_and_rejected_by_reason(store, auth_proc, state):
    secret = make_secret("v1")
    store.add(NewDevice("m-1", "v1", secret))
    client = AuthClient(state.auth_socket)
    for conn in range(3):
        assert client.reading(conn, encrypt(secret["key"], secret["iv"], GOOD))["status"] == "ok"
    assert client.reading(9, encrypt("z" * 16, "A" * 16, GOOD))["reason"] == "unknown_key"
    path = state.run_dir / "metrics-auth.prom"

    def values():
        text = path.read_text()
        return 'reason="unknown_key"} 1' in text and parse_prometheus(text)

    metrics = wait_until(values, 5, what="metrics file")
    assert metrics["medsec_auth_readings_accepted_total"] == 3
    assert metrics["medsec_auth_identify_seconds_count"] == 4
    assert metrics["medsec_auth_v1_candidates"] == 1
    assert secret["key"] not in path.read_text()
    client.close()
