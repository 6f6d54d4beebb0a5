"""Compact JSON for the data path (the auth socket, the bus, the public tree), with orjson.

Every reading is JSON four times over: the proxy's request to auth and its answer, the bus
message, and `Pico/<id>/json`. orjson does each of those small objects in ~0.5-1.5 us against
~5-10 us for the standard library (issue 13: JSON was ~20 % of the proxy's CPU).

`dumps` gives the same text as `json.dumps(obj, separators=(",", ":"))` for what these messages
hold, except that non-ASCII text is written as UTF-8 instead of \\u escapes and an exponent
has no leading zero (1e-7, not 1e-07): the same JSON values.
A string orjson refuses (a lone surrogate, only from text decoded with surrogateescape) falls
back to the standard library's escapes. `loads` is stricter than json.loads: NaN and Infinity,
invalid UTF-8 and lone surrogate escapes are refused, each with a ValueError.
"""
from __future__ import annotations

import json
from typing import Any

import orjson

loads = orjson.loads


def dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # orjson.JSONEncodeError: a str orjson refuses, a non-str key, a huge int
        return json.dumps(obj, separators=(",", ":")).encode()
