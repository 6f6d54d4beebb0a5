# MicroPython-side fake `machine` for running the firmware's main loop under the WebAssembly port.
import struct

PINS = {3: 0, 4: 1}
WRITES = []
FEEDS = [0]
UART_OBJ = [None]


class Pin:
    IN = 0
    OUT = 1
    PULL_DOWN = 2

    def __init__(self, ident, mode=None, pull=None):
        self.ident = ident

    def value(self, v=None):
        if v is None:
            return PINS.get(self.ident, 0)
        WRITES.append((self.ident, v))


class ADC:
    def __init__(self, ch):
        self.ch = ch

    def read_u16(self):
        return 42000 if self.ch == 0 else 14000


class I2C:
    def __init__(self, bus, sda=None, scl=None, freq=None):
        pass

    def writeto_mem(self, addr, reg, data):
        pass

    def readfrom_mem(self, addr, reg, n):
        return struct.pack(">hhhh", -2000, 8192, 16384, -3920)


def UART(bus, baudrate=115200, tx=None, rx=None, rxbuf=None):
    return UART_OBJ[0]


class WDT:
    def __init__(self, timeout=5000):
        self.timeout = timeout

    def feed(self):
        FEEDS[0] += 1


def reset():
    raise SystemExit("reset")
