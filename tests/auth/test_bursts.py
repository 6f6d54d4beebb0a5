"""Bursts of failed identifications reach the audit log once per window, per source address."""
from __future__ import annotations

from services.auth.bursts import BurstDetector, source_address
from tests.auth.wire import AuthClient, encrypt
from tests.support.proc import wait_until

GOOD = '{"Temp":"36.600","TempMcu":"23.700","PulseSig":"2.123","Acel_x":"0.000","Acel_y":"0.000",' \
       '"Acel_z":"0.000","TempMpu":"23.400"}'


def test_detector_reports_once_per_window():
    d = BurstDetector(threshold=3, window=10)
    assert d.failure("1.2.3.4", "unknown_key", 0) is None
    assert d.failure("5.6.7.8", "unknown_key", 1) is None
    assert d.failure("1.2.3.4", "revoked", 2) is None
    burst = d.failure("1.2.3.4", "unknown_key", 3)
    assert burst == {"src": "1.2.3.4", "failures": 3, "window": 10,
                     "reasons": {"unknown_key": 2, "revoked": 1}}
    assert d.failure("1.2.3.4", "unknown_key", 4) is None  # already reported in this window
    # Old failures leave the window: three new ones are needed again.
    assert d.failure("1.2.3.4", "unknown_key", 30) is None
    assert d.failure("1.2.3.4", "unknown_key", 31) is None
    assert d.failure("1.2.3.4", "unknown_key", 32)["failures"] == 3


def test_detector_memory_is_bounded():
    d = BurstDetector(threshold=2, window=60, max_sources=100)
    for i in range(1000):
        d.failure(f"10.0.{i // 256}.{i % 256}", "unknown_key", i * 0.001)
    assert len(d._sources) == 100


def test_source_address():
    assert source_address("127.0.0.1:5000") == "127.0.0.1"
    assert source_address("[::1]:5000") == "::1"
    assert source_address("weird") == "weird"


def test_unknown_keys_from_one_address_are_audited(store, auth_proc, state):
    client = AuthClient(state.auth_socket)
    wire = encrypt("u" * 16, "A" * 16, GOOD).decode().replace("+", "")
    for conn in range(10):
        answer = client.ask({"op": "v1", "conn": conn, "src": f"192.0.2.7:{4000 + conn}", "blocks": wire,
                             "final": True})
        assert answer["reason"] == "unknown_key"
    entries = wait_until(lambda: [e for e in store.audit() if e.action == "identification_failures"], 5,
                         what="audit entry")
    assert len(entries) == 1 and entries[0].actor == "auth"
    assert entries[0].detail["src"] == "192.0.2.7" and entries[0].detail["failures"] == 10
    client.close()
