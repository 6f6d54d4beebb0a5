"""Fake `onewire`: the bus object only carries the pin."""


class OneWire:
    def __init__(self, pin) -> None:
        self.pin = pin
