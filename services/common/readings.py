"""Validation of a decoded reading: shared by auth (reject at the edge) and publisher (defence in depth)."""
from __future__ import annotations

import re

from services.common.errors import ReasonError
from services.common.v1 import FIELDS

# Physically plausible ranges of each sensor (what the hardware can report, not clinical limits:
# alarms are the dashboard's job). A value outside them means a broken or forged reading.
RANGES: dict[str, tuple[float, float]] = {
    "Temp": (-10.0, 60.0),  # DS18X20 on the skin, or ambient when detached
    "TempMcu": (-40.0, 85.0),  # RP2040 operating range
    "PulseSig": (0.0, 3.3),  # ADC0 voltage
    "Acel_x": (-16.0, 16.0),  # MPU6050 full scale
    "Acel_y": (-16.0, 16.0),
    "Acel_z": (-16.0, 16.0),
    "TempMpu": (-40.0, 85.0),  # MPU6050 die temperature
}
_NUMBER = re.compile(r"^-?[0-9]{1,3}(\.[0-9]{1,6})?$")


class ReadingError(ReasonError, ValueError):
    """A reading value that is missing, not a number, or physically impossible."""


def validate(values: dict[str, str]) -> dict[str, float]:
    """Check the seven fields; return them as numbers. Raises ReadingError with a reason code."""
    missing = [f for f in FIELDS if f not in values]
    if missing:
        raise ReadingError("missing_field", f"reading lacks {', '.join(missing)}")
    numbers: dict[str, float] = {}
    for name in FIELDS:
        text = values[name]
        if not isinstance(text, str) or not _NUMBER.match(text):
            raise ReadingError("not_numeric", f"{name} is not a number: {str(text)[:20]!r}")
        value = float(text)
        low, high = RANGES[name]
        if not low <= value <= high:
            raise ReadingError("out_of_range", f"{name}={text} outside [{low}, {high}]")
        numbers[name] = value
    return numbers
