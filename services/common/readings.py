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
# A value's text. Matched whole (fullmatch): `$` would let a trailing newline through.
_NUMBER_TEXT = r"-?[0-9]{1,3}(?:\.[0-9]{1,6})?"
_NUMBER = re.compile(_NUMBER_TEXT)
_SEVEN_NUMBERS = re.compile("\n".join([_NUMBER_TEXT] * len(FIELDS)))
_BOUNDS = tuple((name, *RANGES[name]) for name in FIELDS)


class ReadingError(ReasonError, ValueError):
    """A reading value that is missing, not a number, or physically impossible."""


def validate(values: dict[str, str]) -> dict[str, float]:
    """Check the seven fields; return them as numbers. Raises ReadingError with a reason code.

    For the common case, a valid reading, one match of the seven texts joined by newlines (no
    number holds one) instead of seven, then the bounds (auth and the publisher check every
    reading: a fifth of auth's CPU per v1 reading, issue 13). `_refusal` says what is wrong
    otherwise."""
    try:
        if _SEVEN_NUMBERS.fullmatch("\n".join([values[name] for name in FIELDS])) is not None:
            numbers: dict[str, float] = {}
            for name, low, high in _BOUNDS:
                value = float(values[name])
                if not low <= value <= high:
                    break
                numbers[name] = value
            else:
                return numbers
    except (KeyError, TypeError):  # a field missing, or not a string
        pass
    raise _refusal(values)


def _refusal(values: dict[str, str]) -> ReadingError:
    """Why `values` is not a valid reading: every missing field first, then the first bad value."""
    missing = [f for f in FIELDS if f not in values]
    if missing:
        return ReadingError("missing_field", f"reading lacks {', '.join(missing)}")
    for name, low, high in _BOUNDS:
        text = values[name]
        if not isinstance(text, str) or not _NUMBER.fullmatch(text):
            return ReadingError("not_numeric", f"{name} is not a number: {str(text)[:20]!r}")
        if not low <= float(text) <= high:
            return ReadingError("out_of_range", f"{name}={text} outside [{low}, {high}]")
    raise AssertionError("_refusal called on a valid reading")
