"""Fake `machine` for host runs of the firmware: pins, ADCs, I2C, UART and WDT backed by `BOARD`."""
from __future__ import annotations

import threading
import time


class Board:
    """The simulated hardware a test sets up: switch positions, sensor values, the UART peer."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.pins: dict = {3: 0, 4: 1}
        self.pin_writes: dict = {}
        self.adc: dict[int, int] = {0: 42000, 4: 14000}
        self.i2c_mem: dict[tuple[int, int], bytes] = {}
        self.i2c_fail = False
        self.uart = None  # set by the test: an object with write/any/read
        self.wdt_timeout = None
        self.wdt_feeds = 0
        self.wdt_last = None
        self.wdt_max_gap_ms = 0.0
        self.lock = threading.Lock()


BOARD = Board()


class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, ident, mode=None, pull=None) -> None:
        self.ident = ident

    def value(self, v=None):
        if v is None:
            return BOARD.pins.get(self.ident, 0)
        BOARD.pin_writes.setdefault(self.ident, []).append(v)
        BOARD.pins[self.ident] = v
        return None


class ADC:
    def __init__(self, channel) -> None:
        self.channel = channel

    def read_u16(self) -> int:
        return BOARD.adc[self.channel]


class I2C:
    def __init__(self, bus, sda=None, scl=None, freq=None) -> None:
        self.bus = bus

    def writeto_mem(self, addr, reg, data) -> None:
        if BOARD.i2c_fail:
            raise OSError(5)
        BOARD.i2c_mem[(addr, reg)] = bytes(data)

    def readfrom_mem(self, addr, reg, n) -> bytes:
        if BOARD.i2c_fail:
            raise OSError(5)
        return BOARD.i2c_mem[(addr, reg)][:n]


def UART(bus, baudrate=115200, tx=None, rx=None, rxbuf=None):  # noqa: N802 (MicroPython's name)
    assert bus == 0 and baudrate == 115200, "ESP8266 is on UART0 at 115200"
    return BOARD.uart


class WDT:
    def __init__(self, timeout=5000) -> None:
        BOARD.wdt_timeout = timeout

    def feed(self) -> None:
        # the longest time between feeds: above the timeout, the real RP2040 would have reset
        now = time.monotonic()
        if BOARD.wdt_last is not None:
            BOARD.wdt_max_gap_ms = max(BOARD.wdt_max_gap_ms, (now - BOARD.wdt_last) * 1000)
        BOARD.wdt_last = now
        BOARD.wdt_feeds += 1


class ResetCalled(Exception):
    pass


def reset():
    raise ResetCalled()
