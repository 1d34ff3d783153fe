"""Where hourly air-quality rows come from: the Source protocol, the one parser of its answers,
and the check that an answer is complete.

Every source answers in Open-Meteo's wire format (one JSON object per location, see
https://open-meteo.com/en/docs/air-quality-api), so `responses_to_frame` is the only place
that turns source data into bronze rows, whichever source produced it, and `check_complete`
the only judge of whether those rows may replace a chunk.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol, Sequence

import numpy as np
import pandas as pd

from jobs.errors import IncompleteChunkError, InputError, SourceError
from jobs.inputs import Location
from jobs.tables import AQI_COLUMNS, BRONZE, POLLUTANT_CODES, VOLATILE_COLUMNS

# Open-Meteo's hourly variables we ask for, in the order requests and columns use them.
HOURLY_VARIABLES = (
    "pm2_5",
    "pm10",
    "nitrogen_dioxide",
    "ozone",
    "sulphur_dioxide",
    "carbon_monoxide",
    "aerosol_optical_depth",
    "dust",
    "uv_index",
    "carbon_dioxide",
    "us_aqi",
    "us_aqi_pm2_5",
    "us_aqi_pm10",
    "us_aqi_nitrogen_dioxide",
    "us_aqi_ozone",
    "us_aqi_sulphur_dioxide",
    "us_aqi_carbon_monoxide",
)

VARIABLE_TO_COLUMN = {
    "pm2_5": "pm25",
    "pm10": "pm10",
    "nitrogen_dioxide": "no2",
    "ozone": "o3",
    "sulphur_dioxide": "so2",
    "carbon_monoxide": "co",
    "aerosol_optical_depth": "aod",
    "dust": "dust",
    "uv_index": "uv_index",
    "carbon_dioxide": "co2",
    "us_aqi": "aqi",
    "us_aqi_pm2_5": "aqi_pm25",
    "us_aqi_pm10": "aqi_pm10",
    "us_aqi_nitrogen_dioxide": "aqi_no2",
    "us_aqi_ozone": "aqi_o3",
    "us_aqi_sulphur_dioxide": "aqi_so2",
    "us_aqi_carbon_monoxide": "aqi_co",
}

# The units Open-Meteo labels each variable with in `hourly_units` (μ is U+03BC, as sent).
VARIABLE_UNITS = {
    "pm2_5": "μg/m³",
    "pm10": "μg/m³",
    "nitrogen_dioxide": "μg/m³",
    "ozone": "μg/m³",
    "sulphur_dioxide": "μg/m³",
    "carbon_monoxide": "μg/m³",
    "aerosol_optical_depth": "",
    "dust": "μg/m³",
    "uv_index": "",
    "carbon_dioxide": "ppm",
    **{v: "USAQI" for v in HOURLY_VARIABLES if v.startswith("us_aqi")},
}

# The bronze columns a source's answer fills; bronze adds the lineage columns when it writes.
BRONZE_SOURCE_COLUMNS = tuple(c for c in BRONZE.column_names if c not in VOLATILE_COLUMNS)

_COLUMN_TO_VARIABLE = {column: variable for variable, column in VARIABLE_TO_COLUMN.items()}
# A pollutant needs its concentration and, where Open-Meteo computes one, its US AQI sub-index.
_POLLUTANT_VARIABLES = {
    code: tuple(v for v in (_COLUMN_TO_VARIABLE[code], _COLUMN_TO_VARIABLE.get(f"aqi_{code}")) if v)
    for code in POLLUTANT_CODES
}


class Source(Protocol):
    """Hourly air-quality data for locations and a date range, in Open-Meteo's wire format."""

    # "synthetic" or "open-meteo"; lands in bronze's `source` column
    name: str
    # the model domain its values come from; lands in bronze's `model_domain` column
    model_domain: str
    # what the source was asked and answered (ClientStats for HTTP), None where nothing is counted
    stats: object | None

    def close(self) -> None:
        """Release connections; the source is not used afterwards."""
        ...

    def fetch(self, locations: Sequence[Location], start: dt.date, end: dt.date, variables: Sequence[str]) -> list[dict]:
        """One Open-Meteo-shaped response object per location, in order; `end` is inclusive."""
        ...


def variables_for(pollutant_codes: Sequence[str] | None) -> tuple[str, ...]:
    """The hourly variables those pollutants need, plus `us_aqi`; None means all 17."""
    if pollutant_codes is None:
        return HOURLY_VARIABLES
    wanted = {"us_aqi"}
    for code in pollutant_codes:
        if code not in _POLLUTANT_VARIABLES:
            raise InputError(f"unknown pollutant code {code!r}; known codes: {', '.join(POLLUTANT_CODES)}")
        wanted.update(_POLLUTANT_VARIABLES[code])
    return tuple(v for v in HOURLY_VARIABLES if v in wanted)


def responses_to_frame(
    responses: Sequence[dict],
    locations: Sequence[Location],
    source_name: str,
    now: dt.datetime,
    model_domain: str,
) -> pd.DataFrame:
    """Bronze rows (BRONZE_SOURCE_COLUMNS, in order) from one response per location.

    Hours after `now` (forecasts) are dropped; duplicate timestamps are kept as received (bronze's
    `check_complete` refuses them).
    Open-Meteo's response does not say which domain answered, so `model_domain` is what the
    request asked for. A naive `now` is taken as UTC.
    """
    if len(responses) != len(locations):
        raise SourceError(f"{source_name} returned {len(responses)} responses for {len(locations)} locations")
    cutoff = pd.Timestamp(now)
    cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
    parts = [_parse_response(r, loc, source_name) for r, loc in zip(responses, locations)]
    if not parts:
        frame = _empty_frame()
    else:
        # Concatenate plain arrays and build one frame: 24 small DataFrames cost more than the data.
        merged = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        ts = pd.Series(merged.pop("ts_utc"), dtype="datetime64[ns, UTC]")
        frame = pd.DataFrame({"location_key": pd.Series(merged.pop("location_key"), dtype=object), "ts_utc": ts,
                              "date_utc": pd.Series(ts.dt.date, dtype=object)})
        frame["latitude"], frame["longitude"] = merged.pop("latitude"), merged.pop("longitude")
        for column in AQI_COLUMNS:
            frame[column] = pd.Series(np.round(merged[column])).astype("Int32")
        for column in POLLUTANT_CODES:
            frame[column] = merged[column]
    frame = frame[frame["ts_utc"] <= cutoff].reset_index(drop=True)
    frame["model_domain"] = pd.Series([model_domain] * len(frame), dtype=object)
    frame["source"] = pd.Series([source_name] * len(frame), dtype=object)
    return frame[list(BRONZE_SOURCE_COLUMNS)]


def check_complete(
    responses: Sequence[dict],
    frame: pd.DataFrame,
    locations: Sequence[Location],
    variables: Sequence[str],
    expected: pd.DatetimeIndex,
    source_name: str,
    chunk_id: str,
) -> None:
    """Raise IncompleteChunkError unless the source's answer for a chunk is complete.

    Complete means, for every location: its `hourly` object has every requested variable (its
    values may be null), and its rows in `frame` (already cut to the chunk) hold every hour of
    `expected` exactly once and no other time. Open-Meteo sends a regular hourly time axis with
    `null` where it has no value; it does not drop or repeat timestamps, so an answer that does is
    broken, and writing it would delete stored hours. The message names the first incomplete
    location, in `locations` order, and how many more there are.
    """
    times = dict(iter(frame.groupby("location_key", sort=False)["ts_utc"]))
    problems: list[tuple[str, str]] = []
    for response, location in zip(responses, locations):
        key = location.location_key
        found = []
        hourly = response.get("hourly") if isinstance(response, dict) else None
        absent = [v for v in variables if not isinstance(hourly, dict) or v not in hourly]
        if absent:
            found.append(f"left out variable{'s' * (len(absent) > 1)} {', '.join(map(repr, absent))}")
        counts = times[key].value_counts() if key in times else pd.Series([], dtype=int)
        present = expected.isin(counts.index)
        if not present.all():
            missing = _spans(expected[~present])
            found.append(f"answered {int(present.sum())} of {len(expected)} hours, missing {missing}")
        repeated = pd.DatetimeIndex(counts.index[counts > 1]).sort_values()
        if len(repeated):
            found.append(f"sent {len(repeated)} hour{'s' * (len(repeated) > 1)} more than once ({_few(repeated)})")
        stray = pd.DatetimeIndex(counts.index[~counts.index.isin(expected)]).sort_values()
        if len(stray):
            found.append(f"sent {len(stray)} time{'s' * (len(stray) > 1)} that {'are' if len(stray) > 1 else 'is'} "
                         f"not an hour of the chunk ({_few(stray)})")
        if found:
            problems.append((key, "; ".join(found)))
    if problems:
        key, what = problems[0]
        more = f"; {len(problems) - 1} more location{'s' * (len(problems) > 2)} incomplete" if len(problems) > 1 else ""
        raise IncompleteChunkError(
            f"incomplete chunk {chunk_id} for location {key!r}: {source_name} {what}{more}; nothing was written",
            chunk=chunk_id, location=key,
        )


def _label(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%dT%H:%MZ")


def _spans(hours: pd.DatetimeIndex, limit: int = 3) -> str:
    """Sorted hours as runs of consecutive hours: `A .. B, C`, at most `limit` runs named."""
    breaks = np.flatnonzero((hours[1:] - hours[:-1]) != pd.Timedelta(hours=1)) + 1
    runs = np.split(np.arange(len(hours)), breaks)
    named = [_label(hours[r[0]]) if len(r) == 1 else f"{_label(hours[r[0]])} .. {_label(hours[r[-1]])}"
             for r in runs[:limit]]
    rest = f" and {len(runs) - limit} more gap{'s' * (len(runs) - limit > 1)}" if len(runs) > limit else ""
    return ", ".join(named) + rest


def _few(moments: pd.DatetimeIndex, limit: int = 3) -> str:
    named = ", ".join(_label(t) for t in moments[:limit])
    return named + (f" and {len(moments) - limit} more" if len(moments) > limit else "")


def _parse_response(response: dict, location: Location, source_name: str) -> dict[str, np.ndarray]:
    """One response as equal-length arrays: ts_utc, location_key, latitude, longitude, value columns."""
    where = f"{source_name} response for {location.location_key!r}"
    if not isinstance(response, dict):
        raise SourceError(f"{where} is not a JSON object")
    hourly = response.get("hourly")
    if not isinstance(hourly, dict) or not isinstance(hourly.get("time"), list):
        raise SourceError(f"{where} has no hourly.time array")
    times = hourly["time"]
    try:
        ts = pd.to_datetime(pd.Series(times, dtype=object), format="%Y-%m-%dT%H:%M", utc=True)
    except (ValueError, TypeError):
        raise SourceError(f"{where} has a time that is not YYYY-MM-DDThh:mm (first: {times[:1]})") from None
    offset = response.get("utc_offset_seconds") or 0
    if offset:
        # We ask for GMT; should a local time axis come back anyway, its labels are local.
        ts = ts - pd.Timedelta(seconds=int(offset))
    lat, lon = response.get("latitude"), response.get("longitude")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lat, lon)):
        raise SourceError(f"{where} has no numeric latitude/longitude")
    n = len(times)
    arrays: dict[str, np.ndarray] = {
        "ts_utc": ts.to_numpy(dtype="datetime64[ns]"),
        "location_key": np.full(n, location.location_key, dtype=object),
        "latitude": np.full(n, float(lat)),
        "longitude": np.full(n, float(lon)),
    }
    for column in AQI_COLUMNS + POLLUTANT_CODES:
        variable = _COLUMN_TO_VARIABLE[column]
        values = hourly.get(variable)
        if values is None:
            arrays[column] = np.full(n, np.nan)
        elif not isinstance(values, list) or len(values) != n:
            got = len(values) if isinstance(values, list) else type(values).__name__
            raise SourceError(f"{where}: hourly.{variable} has {got} values for {n} times")
        else:
            try:
                arrays[column] = np.array(values, dtype=float)  # null -> NaN
            except (TypeError, ValueError):
                raise SourceError(f"{where}: hourly.{variable} holds a value that is not a number") from None
    return arrays


def _empty_frame() -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "location_key": pd.Series([], dtype=object),
            "ts_utc": pd.Series([], dtype="datetime64[ns, UTC]"),
            "date_utc": pd.Series([], dtype=object),
            "latitude": pd.Series([], dtype=float),
            "longitude": pd.Series([], dtype=float),
        }
    )
    for column in AQI_COLUMNS:
        frame[column] = pd.Series([], dtype="Int32")
    for column in POLLUTANT_CODES:
        frame[column] = pd.Series([], dtype=float)
    return frame
