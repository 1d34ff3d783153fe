"""Pipeline inputs: the locations and pollutants files, read and validated line by line.

Both files are JSON Lines: one object a line, blank lines skipped. Any broken line raises
`InputFileError` naming `file:line` and the problem; nothing is silently dropped.
"""

from __future__ import annotations

import json
import math
import re
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from jobs.errors import InputError, InputFileError
from jobs.tables import POLLUTANT_CODES

SLUG = re.compile(r"^[a-z0-9_]+$")
AQI_TIMESPANS = ("24h", "8h", "1h")

_LOCATION_FIELDS = ("location_key", "location_name", "latitude", "longitude", "timezone")
_POLLUTANT_FIELDS = ("pollutant_code", "display_name", "unit_default", "aqi_timespan", "who_guideline_24h")


@dataclass(frozen=True)
class Location:
    """One city from locations.jsonl; `extra` keeps unknown fields for dim_location."""

    location_key: str
    location_name: str
    latitude: float
    longitude: float
    timezone: str
    extra: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Pollutant:
    """One pollutant from pollutants.jsonl."""

    pollutant_code: str
    display_name: str
    unit_default: str
    aqi_timespan: str | None
    who_guideline_24h: float | None = None


def load_locations(path: str | Path, keys: Sequence[str] | None = None) -> list[Location]:
    """The locations of `path` in file order, restricted to `keys` when given."""
    parsed = ((n, _parse_location(obj, str(path), n)) for n, obj in _read_objects(path))
    return _unique_selection(path, parsed, "location_key", keys, "location key", "locations")


def load_pollutants(path: str | Path, codes: Sequence[str] | None = None) -> list[Pollutant]:
    """The pollutants of `path` in file order, restricted to `codes` when given."""
    for code in codes or ():
        if code not in POLLUTANT_CODES:
            raise InputError(f"unknown pollutant code {code!r}; known codes: {', '.join(POLLUTANT_CODES)}")
    parsed = ((n, _parse_pollutant(obj, str(path), n)) for n, obj in _read_objects(path))
    return _unique_selection(path, parsed, "pollutant_code", codes, "pollutant code", "pollutants")


def _unique_selection(path, items: Iterator, key: str, wanted: Sequence[str] | None, what: str, plural: str) -> list:
    """Items in file order, refusing a duplicate `key`, restricted to `wanted` keys when given.

    `items` yields (line number, item) pairs; each item has the attribute `key`.
    """
    found: dict[str, tuple[int, object]] = {}
    for line_no, item in items:
        value = getattr(item, key)
        if value in found:
            raise InputFileError(str(path), line_no, f"duplicate {key} {value!r} (first on line {found[value][0]})")
        found[value] = (line_no, item)
    if wanted is not None:
        missing = [k for k in wanted if k not in found]
        if missing:
            raise InputError(f"{what} {missing[0]!r} is not in {path}; it has: {', '.join(found) or 'none'}")
        found = {k: v for k, v in found.items() if k in set(wanted)}
    if not found:
        raise InputError(f"no {plural} to process in {path}")
    return [item for _, item in found.values()]


def _read_objects(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line of a JSON Lines file."""
    try:
        # utf-8-sig: editors on Windows like to start files with a BOM.
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputFileError(str(path), None, "file not found") from None
    except UnicodeDecodeError as exc:
        raise InputFileError(str(path), None, f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InputFileError(str(path), None, f"cannot read: {exc.strerror}") from None
    # split("\n"), not splitlines(): the latter also breaks at U+2028 inside JSON strings,
    # which would make the reported line numbers wrong.
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFileError(str(path), line_no, f"not valid JSON: {exc.msg} at column {exc.colno}") from None
        if not isinstance(obj, dict):
            raise InputFileError(str(path), line_no, f"expected a JSON object, got {_json_type(obj)}")
        yield line_no, obj


def _parse_location(obj: dict, path: str, line_no: int) -> Location:
    key = _text(obj, "location_key", path, line_no)
    if not SLUG.match(key):
        raise InputFileError(path, line_no, f"location_key {key!r} must match [a-z0-9_]+ (lower-case slug)")
    name = _text(obj, "location_name", path, line_no)
    latitude = _number(obj, "latitude", path, line_no)
    longitude = _number(obj, "longitude", path, line_no)
    if not -90 <= latitude <= 90:
        raise InputFileError(path, line_no, f"latitude {latitude} is out of range -90..90")
    if not -180 <= longitude <= 180:
        raise InputFileError(path, line_no, f"longitude {longitude} is out of range -180..180")
    timezone = _text(obj, "timezone", path, line_no)
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InputFileError(path, line_no, f"timezone {timezone!r} is not an IANA time zone") from None
    extra = {k: v for k, v in obj.items() if k not in _LOCATION_FIELDS}
    return Location(key, name, latitude, longitude, timezone, extra)


def _parse_pollutant(obj: dict, path: str, line_no: int) -> Pollutant:
    # Pollutants have no place for extra fields, so an unknown one is most likely a typo
    # (who_guidline_24h) that would silently drop a value.
    unknown = sorted(set(obj) - set(_POLLUTANT_FIELDS))
    if unknown:
        raise InputFileError(path, line_no, f"unknown field {unknown[0]!r}; fields are {', '.join(_POLLUTANT_FIELDS)}")
    code = _text(obj, "pollutant_code", path, line_no)
    if code not in POLLUTANT_CODES:
        raise InputFileError(
            path, line_no, f"unknown pollutant code {code!r}; known codes: {', '.join(POLLUTANT_CODES)}"
        )
    display_name = _text(obj, "display_name", path, line_no)
    unit = _text(obj, "unit_default", path, line_no, allow_empty=True)
    if "aqi_timespan" not in obj:
        raise InputFileError(path, line_no, "missing field 'aqi_timespan' (24h, 8h, 1h or null)")
    timespan = obj["aqi_timespan"]
    if timespan is not None and timespan not in AQI_TIMESPANS:
        raise InputFileError(path, line_no, f"aqi_timespan {timespan!r} must be 24h, 8h, 1h or null")
    who = None
    if obj.get("who_guideline_24h") is not None:
        who = _number(obj, "who_guideline_24h", path, line_no)
        if who <= 0:
            raise InputFileError(path, line_no, f"who_guideline_24h {who} must be positive")
    return Pollutant(code, display_name, unit, timespan, who)


def _text(obj: dict, name: str, path: str, line_no: int, *, allow_empty: bool = False) -> str:
    if name not in obj:
        raise InputFileError(path, line_no, f"missing field {name!r}")
    value = obj[name]
    if not isinstance(value, str):
        raise InputFileError(path, line_no, f"field {name!r} must be a string, got {_json_type(value)}")
    if not allow_empty and not value.strip():
        raise InputFileError(path, line_no, f"field {name!r} is empty")
    return value


def _number(obj: dict, name: str, path: str, line_no: int) -> float:
    if name not in obj:
        raise InputFileError(path, line_no, f"missing field {name!r}")
    value = obj[name]
    # bool is an int in Python, but `true` is never a coordinate.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputFileError(path, line_no, f"field {name!r} must be a number, got {_json_type(value)}")
    if not math.isfinite(value):
        raise InputFileError(path, line_no, f"field {name!r} must be finite, got {value}")
    return float(value)


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "an array"
    return "an object"
