"""The simulator's live status line and closing summary (pure formatting)."""
from __future__ import annotations

from services.sim.runner import SimStats


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def status_line(stats: SimStats, rate: float) -> str:
    """One line: devices, readings sent (and the current rate), acknowledged, errors, reconnects."""
    acked = f"{stats.acked} | resent {stats.resent}" if stats.acknowledging else "n/a"
    return (f"{_clock(stats.elapsed)} devices {stats.connected}/{stats.devices} connected | "
            f"sent {stats.sent} ({rate:.1f}/s) | acked {acked} | errors {stats.errors} | "
            f"reconnects {stats.reconnects}")


def summary(stats: SimStats) -> str:
    rate = stats.sent / stats.elapsed if stats.elapsed > 0 else 0.0
    lines = [
        f"simulated {stats.devices} device(s) for {stats.elapsed:.1f} s",
        f"  readings sent    {stats.sent} ({rate:.1f}/s)",
    ]
    if stats.acknowledging:
        lines.append(f"  acknowledged     {stats.acked}")
        lines.append(f"  resent           {stats.resent}")
    lines += [f"  errors           {stats.errors}", f"  reconnects       {stats.reconnects}"]
    return "\n".join(lines)


class Reporter:
    """The status line: `\\r`-refreshed each second on a terminal, else a plain line every `every` s."""

    def __init__(self, stream, tty: bool, every: float = 10.0) -> None:
        self.stream = stream
        self.tty = tty
        self.every = every
        self._last_sent = 0
        self._last_t = 0.0
        self._last_print = 0.0
        self._width = 0

    def __call__(self, stats: SimStats) -> None:
        dt = stats.elapsed - self._last_t
        rate = (stats.sent - self._last_sent) / dt if dt > 0 else 0.0
        self._last_sent, self._last_t = stats.sent, stats.elapsed
        line = status_line(stats, rate)
        if self.tty:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        elif stats.elapsed - self._last_print >= self.every - 0.5:
            self._last_print = stats.elapsed
            self.stream.write(line + "\n")
        else:
            return
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
