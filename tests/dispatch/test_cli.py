"""`medsec line run` and `medsec station run|list|revoke` against a running stack (real processes)."""
from __future__ import annotations

import json
import subprocess
import sys

from services.common import envelope
from services.common.state import service_token, write_secret
from services.dispatch.provisioning import station_dir
from tests.dispatch.conftest import api


def medsec(dstack, name: str, *args: str) -> tuple[int, str]:
    proc = dstack.procs.start(name, [sys.executable, "-m", "services.cli.main", *args], env=dstack.env)
    proc.wait(90)
    return proc.returncode, (dstack.procs.log_dir / f"{name}.log").read_text()


def seed_keys(dstack, stations) -> None:
    """Station keys from the vectors, where `medsec station` keeps them: no slow key generation here
    (benchmarks/bench_envelope.py and `medsec line run` on a fresh state dir exercise it)."""
    names = stations if isinstance(stations, dict) else {s: s for s in stations}
    for station, key_name in names.items():
        station_dir(dstack.config, station).mkdir(parents=True, exist_ok=True)
        pem = envelope.private_pem(dstack.keys[key_name])
        write_secret(station_dir(dstack.config, station) / "key.pem", pem)


def test_line_run_drives_three_stations_to_completion(dstack):
    seed_keys(dstack, ["s1", "s2", "s3"])
    dstack.start_dispatch()
    code, out = medsec(dstack, "line-run", "line", "run", "--stations", "3")
    assert code == 0, out
    assert "s1 -> s2 -> s3" in out
    assert "[s2] verdict: fail" in out and "[s2] verdict: pass" in out
    assert "s2: passed with value set 2 after 2 attempt(s)" in out
    assert "s1: passed with value set 1 after 1 attempt(s)" in out
    assert "line complete" in out
    # The order is the line's. Each station prints its pass before it sends done, and the server
    # sends the next go only after that done, so pass -> go is causal. (A station's "done
    # recorded" and the next one's "go received" are two messages to two clients: no order.)
    lines = out.splitlines()
    order = ["[s1] verdict: pass", "[s2] go received (s1 is done)", "[s2] verdict: pass",
             "[s3] go received (s2 is done)"]
    positions = [next(i for i, line in enumerate(lines) if text in line) for text in order]
    assert positions == sorted(positions)
    state = json.loads(dstack.state_path.read_text())
    assert state["done"] == ["s1", "s2", "s3"]


def test_station_run_registers_runs_lists_and_revokes(dstack):
    dstack.write_line("single", {"solo": {"station": "solo", "value_sets": [{"setpoint": 100}],
                                          "accept": {"field": "result", "min": 99, "max": 101}}})
    dstack.start_dispatch()
    seed_keys(dstack, {"solo": "s1"})
    code, out = medsec(dstack, "station-run", "station", "run", "solo", "--timeout", "30")
    assert code == 0, out
    assert "registered its public key" in out
    assert "passed with value set 1" in out
    key_file = station_dir(dstack.config, "solo") / "key.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    code, out = medsec(dstack, "station-list", "station", "list")
    assert code == 0 and "solo" in out and "SHA256:" in out
    assert "PRIVATE" not in out
    code, out = medsec(dstack, "station-revoke", "station", "revoke", "solo")
    assert code == 0, out
    status, doc = api(dstack.config, "GET", "/stations")
    assert status == 200 and doc["stations"] == []


def test_line_run_takes_the_token_from_stdin_when_asked(dstack):
    """Where no state dir holds a manage token (the dispatch container), the operator's comes on
    stdin: the one given is the one used (a read token is refused by the API), and none is an error."""
    seed_keys(dstack, {"t1": "s1"})
    dstack.start_dispatch()
    argv = [sys.executable, "-m", "services.cli.main", "line", "run", "--stations", "1", "--prefix", "t",
            "--token-stdin"]
    read_token = service_token(dstack.config, "nodered-read")
    refused = subprocess.run(argv, env=dstack.env, input=read_token + "\n", capture_output=True, text=True,
                             timeout=90)
    assert refused.returncode != 0 and "needs manage" in refused.stderr, refused.stderr
    assert read_token not in refused.stdout + refused.stderr
    empty = subprocess.run(argv, env=dstack.env, input="", capture_output=True, text=True, timeout=90)
    assert empty.returncode != 0 and "no token on standard input" in empty.stderr, empty.stderr
