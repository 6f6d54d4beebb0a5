"""The data path's JSON: the standard library's compact text, and a clear ValueError for bad input."""
from __future__ import annotations

import json

import pytest

from services.common import fastjson

pytestmark = pytest.mark.unit

MESSAGES = [
    {"id": 7, "op": "v1", "conn": 3, "src": "10.0.0.9:50123", "blocks": "00ff" * 40, "final": True},
    {"id": 7, "status": "ok", "device": "pico-01", "gen": 2, "variant": "chained",
     "values": {"Temp": "36.6", "TempMcu": "25.0", "PulseSig": "512", "Acel_x": "-0.01",
                "Acel_y": "0.5", "Acel_z": "9.81", "TempMpu": "24.1"}},
    {"device": "pico-01", "ts": 1764720000.123456, "seq": None, "gen": None, "protocol": "v1",
     "src": ["10.0.0.9", 50123], "gw": ["0.0.0.0", 8888], "uid": "a1b2-17"},
    {"n": [0, -1, 2**63 - 1, 1.5, 0.001, 123456789.25, True, False, None], "s": "quote \" slash \\ tab \t"},
]


@pytest.mark.parametrize("message", MESSAGES)
def test_the_text_is_the_standard_librarys_compact_text(message):
    assert fastjson.dumps(message) == json.dumps(message, separators=(",", ":")).encode()
    assert fastjson.loads(fastjson.dumps(message)) == message


def test_a_float_in_exponent_form_has_no_leading_zero_in_its_exponent_and_keeps_its_value():
    doc = {"x": 1e-07, "y": -2.5e+20}
    assert fastjson.dumps(doc) == b'{"x":1e-7,"y":-2.5e+20}'
    assert json.loads(fastjson.dumps(doc)) == doc


def test_non_ascii_text_is_written_as_utf8_and_reads_back_the_same():
    doc = {"detail": "température ≥ 40 °C"}
    assert fastjson.dumps(doc) == json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    assert json.loads(fastjson.dumps(doc)) == doc


@pytest.mark.parametrize("doc", [{"detail": "bad \udc80 byte"}, {1: "an int key"}, {"n": 2**70}])
def test_what_orjson_refuses_is_written_by_the_standard_library(doc):
    assert fastjson.dumps(doc) == json.dumps(doc, separators=(",", ":")).encode()


@pytest.mark.parametrize("payload", [
    b"", b"{", b"[1,2", b"\xff\xfe", b'{"a": NaN}', b"Infinity", b'"\\udc80"', b"[" * 5000 + b"]" * 5000,
    b'{"a":1}trailing', b"\x00",
])
def test_bad_input_is_one_value_error(payload):
    with pytest.raises(ValueError):
        fastjson.loads(payload)
