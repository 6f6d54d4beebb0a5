"""The simulator's engine against a real TCP listener that decodes what it receives with the v1 codec."""
from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys

from Crypto.Cipher import AES

from services.common import v1
from services.common.readings import validate
from services.sim import Credentials, SimOptions, Simulation, make_device, registry
from services.sim.v2 import V2Device, seq_counter
from tests.support.proc import ROOT


def creds(n: int) -> list[Credentials]:
    return [Credentials(f"sim-{i:03d}", "v1", {"key": f"key-{i:012d}", "iv": f"iv--{i:012d}"})
            for i in range(1, n + 1)]


async def until(condition, timeout: float) -> None:
    """wait_until for code on the event loop: poll without blocking the loop; fail after the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


class Gateway:
    """A stand-in for the proxy: accepts connections, decodes v1 readings, can drop connections."""

    def __init__(self, known: list[Credentials], close_after: int | None = None) -> None:
        self.keys = [(c.id, AES.new(c.secrets["key"].encode(), AES.MODE_ECB), c.secrets["iv"].encode())
                     for c in known]
        self.close_after = close_after
        self.readings: dict[str, list[dict[str, str]]] = {}
        self.connections = 0
        self.server: asyncio.base_events.Server | None = None

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port, backlog=2048)
        return self.server.sockets[0].getsockname()[1]

    def received(self) -> int:
        return sum(len(r) for r in self.readings.values())

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        buf = b""
        who = None
        count = 0
        while data := await reader.read(4096):
            buf += data
            while (scan := v1.scan(buf)) is not None:
                if who is None:
                    who = next(k for k in self.keys if v1.first_block_matches(k[1], k[2], scan.blocks[0]))
                plain = v1.decrypt(who[1], who[2], scan.blocks, "chained")
                if not v1.ends_with_padding(plain):
                    break  # the rest of the reading is still on its way
                self.readings.setdefault(who[0], []).append(v1.parse_plaintext(v1.strip_padding(plain)))
                buf = buf[scan.consumed:]
                count += 1
                if self.close_after and count >= self.close_after:
                    writer.close()
                    return
        writer.close()


def test_devices_stream_at_their_rate_and_every_reading_decodes() -> None:
    known = creds(5)

    async def main():
        gateway = Gateway(known)
        port = await gateway.start()
        options = SimOptions(port=port, rate=20, duration=1.0, seed=1)
        stats = await Simulation([make_device(c) for c in known], options).run()
        # The listener may still be reading what is in its socket buffers.
        await until(lambda: gateway.received() == stats.sent, 5)
        await gateway.stop()
        return gateway, stats

    gateway, stats = asyncio.run(main())
    assert stats.devices == 5 and stats.errors == 0 and stats.reconnects == 0
    assert gateway.received() == stats.sent
    assert 5 * 20 * 0.8 <= stats.sent <= 5 * 20 * 1.1
    assert set(gateway.readings) == {c.id for c in known}
    for readings in gateway.readings.values():
        for values in readings:
            validate(values)


def test_reconnects_with_backoff_when_the_gateway_drops_it_or_is_down() -> None:
    known = creds(2)

    async def main():
        gateway = Gateway(known, close_after=3)
        port = await gateway.start()
        await gateway.stop()  # the port is free: the first connects fail
        sim = Simulation([make_device(c) for c in known],
                         SimOptions(port=port, rate=50, duration=1.5, min_backoff=0.05, max_backoff=0.2))
        task = asyncio.create_task(sim.run())
        await until(lambda: sim.stats.errors >= 2, 5)  # refused while the gateway is down
        failed_connects = sim.stats.errors
        await gateway.start(port)
        stats = await task
        await gateway.stop()
        return gateway, stats, failed_connects

    gateway, stats, failed_connects = asyncio.run(main())
    assert failed_connects >= 2  # refused while the gateway was down
    assert gateway.connections >= 4 and stats.reconnects >= 2  # dropped after 3 readings, came back
    assert sum(len(r) for r in gateway.readings.values()) >= 4 * 3


def test_cli_runs_prints_status_and_stops_cleanly_on_ctrl_c(config, tmp_path) -> None:
    """Without --register it uses stored credentials; SIGINT: a summary and exit 0."""
    known = creds(2)
    registry.save(config, {c.id: c for c in known})
    assert os.stat(registry.store_path(config)).st_mode & 0o777 == 0o600

    async def main():
        gateway = Gateway(known)
        port = await gateway.start()
        out = tmp_path / "sim.out"
        env = {**os.environ, "MEDSEC_HOME": str(config.home)}
        with open(out, "wb") as stdout:
            proc = subprocess.Popen([sys.executable, "-m", "services.cli.main", "sim", "--devices", "2",
                                     "--rate", "20", "--port", str(port)],
                                    stdout=stdout, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            await until(lambda: gateway.received() >= 10, 10)
            proc.send_signal(signal.SIGINT)
            await until(lambda: proc.poll() is not None, 10)
        finally:
            if proc.poll() is None:
                proc.kill()
        await gateway.stop()
        return proc.returncode, out.read_text(), gateway

    code, text, gateway = asyncio.run(main())
    assert code == 0, text
    assert "streaming to 127.0.0.1" in text
    assert "simulated 2 device(s)" in text and "Traceback" not in text
    sent = int(text.split("readings sent")[1].split()[0])
    assert sent >= 10 and sent == gateway.received()


def test_cli_errors_are_one_line(config) -> None:
    env = {**os.environ, "MEDSEC_HOME": str(config.home)}
    run = subprocess.run([sys.executable, "-m", "services.cli.main", "sim", "--devices", "2"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)
    assert run.returncode == 1
    assert run.stderr.startswith("medsec: ") and "--register" in run.stderr and "Traceback" not in run.stderr


def test_a_thousand_devices_connect_and_stop_on_time() -> None:
    known = creds(1000)

    async def main():
        gateway = Gateway(known)
        port = await gateway.start()
        options = SimOptions(port=port, rate=2, duration=2.0)
        stats = await Simulation([make_device(c) for c in known], options).run()
        await until(lambda: gateway.received() == stats.sent, 10)
        await gateway.stop()
        return gateway, stats

    gateway, stats = asyncio.run(main())
    assert stats.elapsed < 15.0  # it ends (a lost cancellation once made such runs endless)
    assert stats.errors == 0 and stats.sent == gateway.received()
    assert stats.sent > 0


def test_a_v2_connection_that_stops_answering_is_ended_after_ack_timeout_and_resent() -> None:
    """A gateway that reads and never answers (a half-open link, a stalled gateway): the device ends the
    connection after ack_timeout, opens a new one and sends its unanswered readings again."""
    keys = {"master_key": secrets.token_hex(16), "key_id": secrets.token_hex(4)}
    creds = Credentials("sim-silent", "v2", keys)

    async def main():
        connections: list[int] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(0)
            while data := await reader.read(4096):
                connections[-1] += len(data)
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        device = V2Device(creds, counter=seq_counter(None))
        sim = Simulation([device], SimOptions(port=port, rate=20, duration=10, ack_timeout=0.3,
                                              min_backoff=0.01, max_backoff=0.02))
        task = asyncio.create_task(sim.run())
        await until(lambda: sim.stats.ack_timeouts >= 3, 5)
        sim.stop()
        stats = await task
        server.close()
        return connections, stats, device

    connections, stats, device = asyncio.run(main())
    assert len(connections) >= 3 and stats.reconnects >= 2
    assert stats.resent >= 2 * 5  # each new connection starts with everything still unanswered
    assert stats.acked == 0 and len(device.pending) == stats.sent  # nothing answered, nothing dropped
