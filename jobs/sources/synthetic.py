"""A built-in, offline source that answers like Open-Meteo with plausible Vietnamese air quality.

Every value is a pure function of (seed, location_key, hour): randomness comes from a
counter-based hash (splitmix64) of those three, never from a stream that runs across a request.
So a month fetched alone, inside a year, or in two halves gives identical values for the
same hours, which is what makes chunked and whole backfills comparable.

What it models: diurnal cycles (traffic peaks, afternoon ozone, daytime UV), the dry-season
winter high of northern Vietnam, per-city levels, multi-day pollution episodes, and the faults
silver must clean: null values, all-null hours, and out-of-range spikes (negative or 9999).
Like Open-Meteo, it sends every hour of the range exactly once: an hour without data is a time
entry whose values are all null, never a gap or a repeat in the time axis (bronze refuses those).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from typing import Sequence

import numpy as np

from jobs.errors import DateRangeError, InputError
from jobs.inputs import Location
from jobs.sources import HOURLY_VARIABLES, VARIABLE_UNITS

# CAMS global, which answers outside Europe, is a 0.4° grid.
GRID_STEP_DEG = 0.4
EPOCH = dt.date(1970, 1, 1)

# location_key -> (annual mean PM2.5 µg/m³, industrial share 0..1, elevation m). Bigger and
# more industrial cities are dirtier; unknown keys get a profile derived from their name.
CITY_PROFILES = {
    "hanoi": (34.0, 0.6, 12), "hcmc": (26.0, 0.5, 10), "danang": (18.0, 0.3, 8),
    "haiphong": (30.0, 1.0, 5), "cantho": (20.0, 0.3, 3), "hue": (18.0, 0.2, 10),
    "nhatrang": (14.0, 0.2, 6), "vungtau": (16.0, 0.6, 4), "dalat": (11.0, 0.1, 1480),
    "quynhon": (14.0, 0.2, 8), "vinh": (24.0, 0.4, 6), "halong": (24.0, 0.9, 15),
    "buonmathuot": (17.0, 0.2, 530), "thainguyen": (30.0, 1.0, 30), "namdinh": (27.0, 0.5, 4),
    "bienhoa": (26.0, 0.9, 15), "thudaumot": (25.0, 0.8, 25), "rachgia": (16.0, 0.2, 2),
    "longxuyen": (18.0, 0.3, 4), "camau": (15.0, 0.2, 2), "pleiku": (16.0, 0.2, 780),
    "laocai": (24.0, 0.5, 90), "sonla": (22.0, 0.2, 600), "thanhhoa": (27.0, 0.7, 8),
}

# Fault rates per hour (or per hour and variable); small, but a month of 24 cities shows each.
NULL_VALUE_RATE = 0.004
NULL_HOUR_RATE = 0.003
SPIKE_RATE = 0.0006

# Hash streams: one independent random sequence per purpose.
_S_NOISE, _S_DAILY, _S_SLOW, _S_EPISODE = 1, 20, 40, 60
_S_NULL_VALUE, _S_NULL_HOUR, _S_SPIKE = 100, 200, 300

_EPISODE_BLOCK_H = 144  # one chance of an episode per 6-day block; episodes last 1.5-5 days
_LOOKBACK_H = 24  # the longest AQI average (PM 24-h mean) reaches 23 hours back

_MASK = (1 << 64) - 1
_U64 = np.uint64


def hours(start: dt.date, end: dt.date) -> np.ndarray:
    """Hour numbers (hours since 1970-01-01T00Z) from `start` 00:00 through `end` 23:00 UTC."""
    if end < start:
        raise DateRangeError(f"end date {end} is before start date {start}")
    first = (start - EPOCH).days * 24
    return np.arange(first, (end - EPOCH).days * 24 + 24, dtype=np.int64)


def hour_labels(hour_numbers: np.ndarray) -> list[str]:
    """Open-Meteo's time labels ("YYYY-MM-DDThh:mm", GMT) for hour numbers."""
    return np.datetime_as_string(hour_numbers.astype("datetime64[h]"), unit="m").tolist()


def grid_cell(latitude: float, longitude: float) -> tuple[float, float]:
    """The centre of the 0.4° grid cell nearest to a coordinate, as the API reports it."""
    return (round(round(latitude / GRID_STEP_DEG) * GRID_STEP_DEG, 4),
            round(round(longitude / GRID_STEP_DEG) * GRID_STEP_DEG, 4))


class SyntheticSource:
    """Deterministic Open-Meteo look-alike: the same (seed, location, hour) always gives the same values."""

    name = "synthetic"
    # the synthetic source is its own model domain
    model_domain = "synthetic"
    stats = None

    def __init__(self, seed: int = 7):
        self.seed = int(seed)

    def close(self) -> None:
        """Nothing to release: no connections."""

    def __repr__(self) -> str:
        return f"SyntheticSource(seed={self.seed})"

    def fetch(self, locations: Sequence[Location], start: dt.date, end: dt.date, variables: Sequence[str]) -> list[dict]:
        """One Open-Meteo-shaped response per location, in order; `end` is inclusive."""
        return [self.response(loc.location_key, loc.latitude, loc.longitude, start, end, variables) for loc in locations]

    def response(
        self, location_key: str, latitude: float, longitude: float, start: dt.date, end: dt.date,
        variables: Sequence[str],
    ) -> dict:
        """The response object the API would send for one coordinate."""
        started = time.perf_counter()
        unknown = [v for v in variables if v not in HOURLY_VARIABLES]
        if unknown:
            raise InputError(f"unknown hourly variable {unknown[0]!r}; known: {', '.join(HOURLY_VARIABLES)}")
        wanted = list(dict.fromkeys(variables))
        hrs = hours(start, end)
        series = _Series(self.seed, location_key, latitude, longitude, hrs).values()
        time_axis, columns = _with_faults(self.seed, location_key, hrs, series, wanted)
        lat, lon = grid_cell(latitude, longitude)
        return {
            "latitude": lat,
            "longitude": lon,
            "generationtime_ms": round((time.perf_counter() - started) * 1000, 4),
            "utc_offset_seconds": 0,
            "timezone": "GMT",
            "timezone_abbreviation": "GMT",
            "elevation": float(_profile(location_key)[2]),
            "hourly_units": {"time": "iso8601", **{v: VARIABLE_UNITS[v] for v in wanted}},
            "hourly": {"time": hour_labels(time_axis), **columns},
        }


def _profile(location_key: str) -> tuple[float, float, float]:
    if location_key in CITY_PROFILES:
        return CITY_PROFILES[location_key]
    u = [((_key_hash(0, location_key) >> s) & 0xFFFF) / 0xFFFF for s in (0, 16, 32)]
    return (12.0 + 14.0 * u[0], 0.4 * u[1], round(5 + 95 * u[2]))


class _Series:
    """The true (fault-free) hourly series of one location, including a look-back for AQI means."""

    def __init__(self, seed: int, location_key: str, latitude: float, longitude: float, hrs: np.ndarray):
        self.key = _key_hash(seed, location_key)
        self.lat, self.lon = latitude, longitude
        self.pm_annual, self.industrial, _ = _profile(location_key)
        self.level = self.pm_annual / 34.0
        self.n_out = len(hrs)
        first = int(hrs[0]) if len(hrs) else 0
        self.h = np.arange(first - (_LOOKBACK_H - 1), first + self.n_out, dtype=np.int64)

    def u(self, stream: int, counter: np.ndarray | None = None) -> np.ndarray:
        return _uniform(self.key, stream, self.h if counter is None else counter)

    def normal(self, stream: int, counter: np.ndarray | None = None) -> np.ndarray:
        u1, u2 = self.u(stream, counter), self.u(stream + 1, counter)
        return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)

    def smooth(self, stream: int, period_h: int) -> np.ndarray:
        """Normal noise that drifts smoothly between anchors `period_h` hours apart."""
        k = np.floor_divide(self.h, period_h)
        t = (self.h - k * period_h) / period_h
        t = t * t * (3.0 - 2.0 * t)
        return self.normal(stream, k) * (1.0 - t) + self.normal(stream, k + 1) * t

    def values(self) -> dict[str, np.ndarray]:
        h = self.h
        north = float(np.clip((self.lat - 12.0) / 9.0, 0.0, 1.0))
        day = h / 24.0
        doy = _day_of_year(h)
        season = _season(h, north)
        solar_hour = (h % 24 + self.lon / 15.0) % 24.0
        cosz = _cos_zenith(self.lat, doy, solar_hour)
        weather = np.exp(0.30 * self.smooth(_S_DAILY, 24) + 0.25 * self.smooth(_S_SLOW, 96))
        episodes = self._episodes(north)
        traffic = (1.0 + 0.55 * _bump(solar_hour, 8.0, 1.5) + 0.65 * _bump(solar_hour, 19.5, 2.0)
                   - 0.30 * _bump(solar_hour, 14.5, 3.0))
        pm_diurnal = traffic * (1.0 + 0.18 * _bump(solar_hour, 2.0, 3.5)) / 1.2

        pm_daily = self.pm_annual * np.exp((0.2 + 0.32 * north) * season) * weather * episodes / 1.15
        pm25 = pm_daily * pm_diurnal * np.exp(0.10 * self.normal(_S_NOISE))
        dust = 1.5 * np.exp(0.7 * self.smooth(_S_DAILY + 4, 48)) * (1.0 + 0.6 * np.maximum(season, 0.0))
        pm10 = pm25 * (1.35 + 0.25 * self.u(_S_NOISE + 2) + 0.10 * self.level) + 0.8 * dust
        no2 = ((6.0 + 30.0 * self.level) * traffic * np.exp(0.2 * north * season) * weather ** 0.7
               * episodes ** 0.4 * np.exp(0.12 * self.normal(_S_NOISE + 4)))
        lagged = _cos_zenith(self.lat, doy, (solar_hour - 2.0) % 24.0)
        o3 = ((28.0 + 10.0 * season) * (0.6 + 0.4 * (lagged > 0))
              + (55.0 + 45.0 * self.level) * np.maximum(lagged, 0.0) ** 1.3 * np.exp(0.25 * season)
              * weather ** 0.5 * np.exp(0.08 * self.normal(_S_NOISE + 6)))
        so2 = ((3.0 + 14.0 * self.industrial) * np.exp(0.35 * self.smooth(_S_DAILY + 8, 24))
               * (1.0 + 0.3 * np.maximum(season, 0.0)) * np.exp(0.15 * self.normal(_S_NOISE + 8)))
        co = 180.0 + 550.0 * self.level * (pm_daily / self.pm_annual) ** 0.8 * traffic * np.exp(
            0.08 * self.normal(_S_NOISE + 10))
        aod = np.clip(0.06 + 0.0085 * pm_daily * np.exp(0.15 * self.smooth(_S_DAILY + 12, 24)), 0.05, 2.0)
        cloud = np.clip(0.75 + 0.25 * self.smooth(_S_DAILY + 14, 24) + 0.1 * season, 0.3, 1.0)
        uv = 11.0 * np.maximum(cosz, 0.0) ** 2.4 * cloud
        years = (day - 19723.0) / 365.2425  # since 2024-01-01
        co2 = (421.0 + 2.4 * years + 3.0 * np.cos(2 * np.pi * (doy - 120.0) / 365.2425)
               + 10.0 * self.level * _bump(solar_hour, 4.0, 3.0) + 0.8 * self.normal(_S_NOISE + 12))

        conc = {
            "pm2_5": np.round(pm25, 1), "pm10": np.round(pm10, 1), "nitrogen_dioxide": np.round(no2, 1),
            "ozone": np.round(o3, 1), "sulphur_dioxide": np.round(so2, 1), "carbon_monoxide": np.round(co),
            "aerosol_optical_depth": np.round(aod, 2), "dust": np.round(dust, 1), "uv_index": np.round(uv, 2),
            "carbon_dioxide": np.round(co2),
        }
        aqi = _us_aqi(conc)
        cut = slice(_LOOKBACK_H - 1, None)
        return {name: values[cut] for name, values in {**conc, **aqi}.items()}

    def _episodes(self, north: float) -> np.ndarray:
        """Multiplier > 1 during multi-day pollution episodes, mostly in the dry season."""
        block = np.floor_divide(self.h, _EPISODE_BLOCK_H)
        total = np.ones(len(self.h))
        # An episode starts inside its block and lasts < one block, so only this block and the
        # previous one can cover an hour: each hour's value needs nothing else.
        for b in (block - 1, block):
            start = b * _EPISODE_BLOCK_H + np.floor(self.u(_S_EPISODE + 1, b) * _EPISODE_BLOCK_H)
            length = 36.0 + 84.0 * self.u(_S_EPISODE + 2, b)
            # The block's own season decides, so an episode is all there or not at all.
            block_season = _season(b * _EPISODE_BLOCK_H, north)
            chance = np.clip(0.08 + 0.5 * np.maximum(block_season, 0.0) * (0.3 + 0.7 * north), 0.0, 0.7)
            occurs = self.u(_S_EPISODE, b) < chance
            strength = (0.5 + 1.3 * self.u(_S_EPISODE + 3, b)) * (0.5 + 0.5 * north)
            t = (self.h - start) / length
            inside = occurs & (t >= 0.0) & (t <= 1.0)
            total += np.where(inside, strength * np.sin(np.pi * np.clip(t, 0.0, 1.0)) ** 0.6, 0.0)
        return total


def _with_faults(
    seed: int, location_key: str, hrs: np.ndarray, series: dict[str, np.ndarray], wanted: list[str]
) -> tuple[np.ndarray, dict[str, list]]:
    """Apply null values, all-null hours and spikes; returns the time axis (every hour once) and JSON columns."""
    key = _key_hash(seed, location_key)
    null_hour = _uniform(key, _S_NULL_HOUR, hrs) < NULL_HOUR_RATE
    # One counter per (hour, variable), so each variable's faults are independent of the others.
    cell = hrs[:, None] * 32 + np.arange(len(HOURLY_VARIABLES))[None, :]
    gap = null_hour[:, None] | (_uniform(key, _S_NULL_VALUE, cell) < NULL_VALUE_RATE)
    spike = _uniform(key, _S_SPIKE, cell) < SPIKE_RATE
    absurd = _uniform(key, _S_SPIKE + 1, cell) < 0.5
    columns: dict[str, list] = {}
    for index, variable in enumerate(HOURLY_VARIABLES):
        if variable not in wanted:
            continue
        values = series[variable].astype(float)
        is_aqi = variable.startswith("us_aqi")
        if not is_aqi:
            values = np.where(spike[:, index], np.where(absurd[:, index], 9999.0, -np.round(values * 0.5 + 1.0, 1)),
                              values)
        columns[variable] = _to_json(np.where(gap[:, index], np.nan, values), integer=is_aqi)
    return hrs, columns


def _to_json(values: np.ndarray, *, integer: bool) -> list:
    """A JSON-ready list: floats (ints for AQI) with None for gaps."""
    out = values.astype(object)
    out[np.isnan(values)] = None
    if integer:
        ok = ~np.isnan(values)
        out[ok] = values[ok].astype(np.int64).astype(object)
    return out.tolist()


# US EPA breakpoints (concentration low/high per AQI band 0-50 ... 301-500), as Open-Meteo
# applies them to its own averages; silver recomputes its own AQI, so plausibility is enough.
_AQI_BANDS = (0, 50, 51, 100, 101, 150, 151, 200, 201, 300, 301, 500)
_BREAKPOINTS = {
    "pm25": (0.0, 9.0, 9.1, 35.4, 35.5, 55.4, 55.5, 125.4, 125.5, 225.4, 225.5, 325.4),
    "pm10": (0, 54, 55, 154, 155, 254, 255, 354, 355, 424, 425, 604),
    "o3_8h_ppm": (0.0, 0.054, 0.055, 0.070, 0.071, 0.085, 0.086, 0.105, 0.106, 0.200, 0.201, 0.604),
    "no2_ppb": (0, 53, 54, 100, 101, 360, 361, 649, 650, 1249, 1250, 2049),
    "so2_ppb": (0, 35, 36, 75, 76, 185, 186, 304, 305, 604, 605, 1004),
    "co_ppm": (0.0, 4.4, 4.5, 9.4, 9.5, 12.4, 12.5, 15.4, 15.5, 30.4, 30.5, 50.4),
}


def _index(concentration: np.ndarray, table: str) -> np.ndarray:
    """Piecewise-linear AQI of a concentration series; above the top breakpoint gives 500."""
    bp = np.asarray(_BREAKPOINTS[table], dtype=float)
    c = np.clip(concentration, 0.0, None)
    band = np.clip(np.searchsorted(bp[1::2], c, side="left"), 0, 5)
    c_lo, c_hi = bp[2 * band], bp[2 * band + 1]
    i_lo, i_hi = np.take(_AQI_BANDS, 2 * band), np.take(_AQI_BANDS, 2 * band + 1)
    index = (i_hi - i_lo) / (c_hi - c_lo) * (np.clip(c, c_lo, c_hi) - c_lo) + i_lo
    return np.where(c > bp[-1], 500.0, np.floor(index + 0.5))


def _us_aqi(conc: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Open-Meteo's us_aqi_* from the true series (the first 23 hours are look-back only)."""
    sub = {
        "us_aqi_pm2_5": _index(_trailing_mean(conc["pm2_5"], 24), "pm25"),
        "us_aqi_pm10": _index(_trailing_mean(conc["pm10"], 24), "pm10"),
        "us_aqi_nitrogen_dioxide": _index(conc["nitrogen_dioxide"] / 1.88, "no2_ppb"),
        "us_aqi_ozone": _index(_trailing_mean(conc["ozone"], 8) / 1.96 / 1000.0, "o3_8h_ppm"),
        "us_aqi_sulphur_dioxide": _index(conc["sulphur_dioxide"] / 2.62, "so2_ppb"),
        "us_aqi_carbon_monoxide": _index(_trailing_mean(conc["carbon_monoxide"], 8) / 1.15 / 1000.0, "co_ppm"),
    }
    return {"us_aqi": np.max(np.vstack(list(sub.values())), axis=0), **sub}


def _trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the `window` hours ending at each hour; NaN until a full window exists.

    The window is added up element by element in a fixed order (not with cumsum), so an
    hour's mean is bit-for-bit the same whatever range it was computed in.
    """
    n = len(values) - window + 1
    out = np.full(len(values), np.nan)
    if n > 0:
        total = np.zeros(n)
        for k in range(window):
            total += values[k : k + n]
        out[window - 1 :] = total / window
    return out


def _day_of_year(hour_numbers: np.ndarray) -> np.ndarray:
    """Days since 1 January, fractional (hour 0 of 2000-01-01 is hour 10957 × 24)."""
    return (hour_numbers / 24.0 - 10957.0) % 365.2425


def _season(hour_numbers: np.ndarray, north: float) -> np.ndarray:
    """+1 at the height of the dry season, -1 in the wet: mid-January north, March south."""
    return np.cos(2 * np.pi * (_day_of_year(hour_numbers) - (60.0 - 45.0 * north)) / 365.2425)


def _cos_zenith(lat_deg: float, doy: np.ndarray, solar_hour: np.ndarray) -> np.ndarray:
    decl = np.radians(-23.44) * np.cos(2 * np.pi * (doy + 10.0) / 365.2425)
    lat = np.radians(lat_deg)
    hour_angle = np.radians(15.0 * (solar_hour - 12.0))
    return np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(hour_angle)


def _bump(hour: np.ndarray, centre: float, width: float) -> np.ndarray:
    """A Gaussian bump on the 24-hour clock (wraps at midnight)."""
    d = (hour - centre + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (d / width) ** 2)


def _key_hash(seed: int, location_key: str) -> int:
    # blake2b, not hash(): Python salts str hashes per process.
    digest = hashlib.blake2b(f"{seed}\x1f{location_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _mix_int(x: int) -> int:
    """splitmix64's finaliser on a Python int."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic)."""
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def _uniform(key: int, stream: int, counter: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) numbers, one per counter value, for a (key, stream) pair."""
    salt = _U64(_mix_int(key ^ _mix_int(stream)))
    x = _mix(_mix(np.asarray(counter, dtype=np.int64).astype(np.uint64) ^ salt) + salt)
    return (x >> _U64(11)).astype(np.float64) * (1.0 / (1 << 53))
