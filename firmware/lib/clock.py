# Millisecond ticks and sleeps: MicroPython's time has them; CPython (host tests) does not.
import time

try:
    ticks_ms = time.ticks_ms
    ticks_add = time.ticks_add  # ticks wrap around: always add and compare through these
    ticks_diff = time.ticks_diff
    sleep_ms = time.sleep_ms
except AttributeError:  # CPython host run
    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_add(a, b):
        return a + b

    def ticks_diff(a, b):
        return a - b

    def sleep_ms(ms):
        time.sleep(ms / 1000)


def log(event, **fields):
    # One key=value line per event (the gateway's log format). Never pass secrets.
    parts = ["event=" + event]
    for k in sorted(fields):
        v = str(fields[k])
        if not v or " " in v or "=" in v or '"' in v:
            v = '"' + v.replace('"', "'") + '"'
        parts.append(k + "=" + v)
    print(" ".join(parts))
