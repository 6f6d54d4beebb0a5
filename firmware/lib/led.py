# The on-board LED shows the state: blink patterns as (on ms, off ms).
import machine

from clock import ticks_ms

PATTERNS = {
    "config": (1000, 1000),    # slow blink: configuration mode, AP Med_IoT open
    "joining": (100, 100),     # fast blink: joining Wi-Fi / connecting to the gateway
    "online": (1, 0),          # steady on: sending readings
    "error": (100, 900),       # short flash: sensor or gateway trouble, retrying
}


class Led:
    def __init__(self, pin="LED"):
        try:
            self.pin = machine.Pin(pin, machine.Pin.OUT)
        except (ValueError, TypeError):
            self.pin = machine.Pin(25, machine.Pin.OUT)  # plain Pico: GPIO25
        self.state = None
        self.set("joining")

    def set(self, state):
        if state != self.state:
            self.state = state
            self.tick()

    def tick(self):
        on, off = PATTERNS[self.state]
        if off == 0:
            self.pin.value(1)
            return
        self.pin.value(1 if ticks_ms() % (on + off) < on else 0)
