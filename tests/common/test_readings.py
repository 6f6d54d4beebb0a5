"""Validation of a reading's seven values (services/common/readings.py), which auth and the publisher
both apply: its one-pass form is held to the rule as first written, over every kind of input."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.readings import RANGES, ReadingError, validate
from services.common.v1 import FIELDS

GOOD = {"Temp": "36.600", "TempMcu": "25.1", "PulseSig": "1.5", "Acel_x": "0.01", "Acel_y": "-0.02",
        "Acel_z": "0.98", "TempMpu": "26.3"}


def reference(values: dict) -> tuple[str, object]:
    """The rule, plainly: ("ok", numbers) or (reason, detail)."""
    missing = [f for f in FIELDS if f not in values]
    if missing:
        return "missing_field", f"reading lacks {', '.join(missing)}"
    numbers = {}
    for name in FIELDS:
        text = values[name]
        if not isinstance(text, str) or not re.fullmatch(r"-?[0-9]{1,3}(\.[0-9]{1,6})?", text):
            return "not_numeric", f"{name} is not a number: {str(text)[:20]!r}"
        low, high = RANGES[name]
        if not low <= float(text) <= high:
            return "out_of_range", f"{name}={text} outside [{low}, {high}]"
        numbers[name] = float(text)
    return "ok", numbers


def outcome(values: dict) -> tuple[str, object]:
    try:
        return "ok", validate(values)
    except ReadingError as exc:
        return exc.reason, exc.detail


number_text = st.builds(lambda sign, whole, frac: f"{sign}{whole}{frac}",
                        st.sampled_from(["", "-", "+"]), st.integers(0, 1200).map(str),
                        st.sampled_from(["", ".", ".5", ".25", ".123456", ".1234567"]))
value = st.one_of(number_text, number_text.map(lambda t: t + "\n"), number_text.map(lambda t: " " + t),
                  st.text(max_size=8), st.integers(-5, 5), st.floats(allow_nan=True), st.none(),
                  st.binary(max_size=4))
readings = st.dictionaries(st.sampled_from([*FIELDS, "Extra"]), value, max_size=9)
near_good = st.fixed_dictionaries({name: st.one_of(st.just(GOOD[name]), value) for name in FIELDS})


@settings(max_examples=3000, deadline=None)
@given(st.one_of(readings, near_good))
def test_validate_follows_the_rule_on_any_input(values) -> None:
    assert outcome(values) == reference(values)


def test_a_valid_reading_gives_its_numbers() -> None:
    assert validate(GOOD) == {name: float(text) for name, text in GOOD.items()}


@pytest.mark.parametrize(("change", "reason"), [
    ({"Temp": "36.6\n"}, "not_numeric"),  # a trailing newline is not part of a number
    ({"Temp": "36.6\n25.1"}, "not_numeric"),  # nor one inside (validate joins the texts with them)
    ({"Temp": " 36.6"}, "not_numeric"),
    ({"Temp": 36.6}, "not_numeric"),
    ({"Temp": "99.0"}, "out_of_range"),
    ({"Acel_x": "-16.5"}, "out_of_range"),
])
def test_what_is_refused(change, reason) -> None:
    with pytest.raises(ReadingError) as caught:
        validate({**GOOD, **change})
    assert caught.value.reason == reason


def test_every_missing_field_is_named_before_a_bad_value() -> None:
    values = {**GOOD, "Temp": "hot"}
    del values["Acel_y"], values["TempMpu"]
    with pytest.raises(ReadingError) as caught:
        validate(values)
    assert (caught.value.reason, caught.value.detail) == ("missing_field", "reading lacks Acel_y, TempMpu")
