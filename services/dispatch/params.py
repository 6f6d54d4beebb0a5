"""Parameter files and the line order: loading, validation, and the acceptance rule (pure).

A parameter file, one per station, `<params dir>/<station>.json`:

    {"station": "s2",
     "value_sets": [{"speed": 10, "temp": 180}, {"speed": 8, "temp": 175}],
     "accept": {"field": "result", "min": 0.0, "max": 190.0}}

Any other top-level field travels to the station with the value sets. The
acceptance rule stays on the server. The line order is `line.json` in the same
folder (`{"run": "<id>", "stations": ["s1", "s2", "s3"]}`) or the environment.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.dispatch.topics import valid_station_id

MAX_FILE = 64 * 1024 * 1024


class ParamsError(ValueError):
    """A parameter file or the line definition is unusable."""


@dataclass(frozen=True)
class Rule:
    field: str
    min: float | None = None
    max: float | None = None

    def check(self, result: object) -> tuple[bool, str]:
        """(passed, why) for a station's result object."""
        if not isinstance(result, dict) or self.field not in result:
            return False, f"result has no field {self.field!r}"
        value = result[self.field]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False, f"{self.field} is not a number"
        if self.min is not None and value < self.min:
            return False, f"{self.field}={value} is below {self.min}"
        if self.max is not None and value > self.max:
            return False, f"{self.field}={value} is above {self.max}"
        return True, f"{self.field}={value} within [{self.min}, {self.max}]"


@dataclass(frozen=True)
class ParamFile:
    station: str
    value_sets: list[dict[str, Any]]
    rule: Rule
    extra: dict[str, Any]

    def for_station(self) -> dict[str, Any]:
        """What the station receives: everything but the acceptance rule."""
        return {**self.extra, "station": self.station, "value_sets": self.value_sets}


def _number(rule: dict, name: str) -> float | None:
    value = rule.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamsError(f"accept.{name} must be a number")
    return float(value)


def parse_param_file(doc: object, station: str) -> ParamFile:
    if not isinstance(doc, dict):
        raise ParamsError("a parameter file is a JSON object")
    if doc.get("station", station) != station:
        raise ParamsError(f"file names station {doc.get('station')!r}, expected {station!r}")
    sets = doc.get("value_sets")
    if not isinstance(sets, list) or not sets or not all(isinstance(s, dict) for s in sets):
        raise ParamsError("value_sets must be a non-empty list of objects")
    accept = doc.get("accept")
    if not isinstance(accept, dict) or not isinstance(accept.get("field"), str):
        raise ParamsError('accept must be {"field": name, "min"?: number, "max"?: number}')
    rule = Rule(accept["field"], _number(accept, "min"), _number(accept, "max"))
    extra = {k: v for k, v in doc.items() if k not in ("station", "value_sets", "accept")}
    return ParamFile(station, sets, rule, extra)


def load_param_file(folder: Path, station: str) -> ParamFile:
    path = folder / f"{station}.json"
    try:
        if path.stat().st_size > MAX_FILE:
            raise ParamsError(f"{path} is larger than {MAX_FILE} bytes")
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ParamsError(f"no parameter file for station {station!r} ({path})") from None
    except ValueError as exc:
        raise ParamsError(f"{path} is not valid JSON: {exc}") from None
    return parse_param_file(doc, station)


@dataclass(frozen=True)
class Line:
    run: str
    stations: tuple[str, ...]


def parse_line(doc: object) -> Line:
    if not isinstance(doc, dict):
        raise ParamsError('line.json is {"run": id, "stations": [ids]}')
    stations = doc.get("stations")
    if not isinstance(stations, list) or not stations or not all(valid_station_id(s) for s in stations):
        raise ParamsError("stations must be a non-empty list of station ids")
    if len(set(stations)) != len(stations):
        raise ParamsError("a station appears twice in the line")
    return Line(str(doc.get("run") or "run-1"), tuple(stations))


def load_line(folder: Path, env_stations: str | None = None) -> Line:
    """The line from MEDSEC_DISPATCH_LINE ("s1,s2,s3") if set, else line.json in the folder."""
    if env_stations:
        stations = [s.strip() for s in env_stations.split(",") if s.strip()]
        return parse_line({"run": "env", "stations": stations})
    path = folder / "line.json"
    try:
        return parse_line(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ParamsError(f"no line defined: write {path} or set MEDSEC_DISPATCH_LINE") from None
    except ValueError as exc:
        raise ParamsError(f"{path}: {exc}") from None
