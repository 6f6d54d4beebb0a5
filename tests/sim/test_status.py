"""The live line: refreshed in place on a terminal, periodic plain lines otherwise."""
from __future__ import annotations

import io

from services.sim.runner import SimStats
from services.sim.status import Reporter, status_line, summary


def test_terminal_gets_one_line_rewritten_each_second() -> None:
    out = io.StringIO()
    reporter = Reporter(out, tty=True)
    stats = SimStats(devices=3, connected=3)
    for second in range(1, 4):
        stats.sent += 6
        stats.elapsed = float(second)
        reporter(stats)
    reporter.finish()
    text = out.getvalue()
    assert text.count("\r") == 3 and text.count("\n") == 1
    assert text.rstrip().endswith("0:00:03 devices 3/3 connected | sent 18 (6.0/s) | acked n/a | errors 0 | "
                                  "reconnects 0")


def test_logs_get_a_plain_line_every_few_seconds() -> None:
    out = io.StringIO()
    reporter = Reporter(out, tty=False, every=10)
    stats = SimStats(devices=1, connected=1)
    for second in range(1, 31):
        stats.sent += 1
        stats.elapsed = float(second)
        reporter(stats)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [line.split()[0] for line in lines] == ["0:00:10", "0:00:20", "0:00:30"]


def test_acknowledging_protocols_show_acks_in_the_line_and_summary() -> None:
    stats = SimStats(devices=2, sent=10, acked=9, errors=1, reconnects=1, elapsed=2.0, acknowledging=True)
    assert "acked 9" in status_line(stats, 5.0)
    text = summary(stats)
    assert "readings sent    10 (5.0/s)" in text and "acknowledged     9" in text
    assert "errors           1" in text
