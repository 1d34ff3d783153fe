"""The synthetic source: deterministic per (seed, location, hour), realistic, faulty on purpose in its
values, and complete in its hours (bronze's check)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from jobs.bronze import fetch_chunk
from jobs.config import DATA_DIR
from jobs.dates import Chunk
from jobs.inputs import load_locations
from jobs.sources import BRONZE_SOURCE_COLUMNS, HOURLY_VARIABLES, responses_to_frame
from jobs.sources.synthetic import SyntheticSource, grid_cell

LATER = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)
JAN = (dt.date(2024, 1, 1), dt.date(2024, 1, 31))


@pytest.fixture(scope="module")
def locations():
    return load_locations(DATA_DIR / "locations.jsonl")


@pytest.fixture(scope="module")
def january(locations) -> pd.DataFrame:
    """All 24 cities in a northern dry-season month."""
    return rows(SyntheticSource(), locations, *JAN)


def rows(source, locations, start, end, variables=HOURLY_VARIABLES) -> pd.DataFrame:
    return responses_to_frame(source.fetch(locations, start, end, variables), locations, source.name, LATER, "synthetic")


def by_location(frame: pd.DataFrame) -> pd.DataFrame:
    """Group rows by location, keeping each location's rows in the order received."""
    return frame.sort_values("location_key", kind="stable").reset_index(drop=True)


def test_same_inputs_give_the_same_rows(locations):
    a = rows(SyntheticSource(seed=3), locations[:4], *JAN)
    b = rows(SyntheticSource(seed=3), locations[:4], *JAN)
    pd.testing.assert_frame_equal(a, b)


def test_two_months_equal_two_one_month_fetches(locations):
    source = SyntheticSource()
    whole = rows(source, locations, dt.date(2024, 1, 1), dt.date(2024, 2, 29))
    halves = pd.concat(
        [rows(source, locations, *JAN), rows(source, locations, dt.date(2024, 2, 1), dt.date(2024, 2, 29))],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(by_location(whole), by_location(halves))


def test_a_single_day_equals_that_day_inside_the_month(locations):
    source = SyntheticSource()
    day = rows(source, locations[:2], dt.date(2024, 1, 17), dt.date(2024, 1, 17))
    month = rows(source, locations[:2], *JAN)
    inside = month[month["date_utc"] == dt.date(2024, 1, 17)].reset_index(drop=True)
    assert len(day) >= 2 * 23
    pd.testing.assert_frame_equal(day, inside)


def test_different_seeds_differ(locations):
    a = rows(SyntheticSource(seed=1), locations[:1], *JAN)
    b = rows(SyntheticSource(seed=2), locations[:1], *JAN)
    shared = a.merge(b, on="ts_utc", suffixes=("_a", "_b"))
    assert (shared["pm25_a"] != shared["pm25_b"]).mean() > 0.9


def test_response_has_the_real_api_shape(locations):
    response = SyntheticSource().fetch(locations[:1], dt.date(2024, 3, 1), dt.date(2024, 3, 2), ["pm2_5", "us_aqi"])[0]
    assert list(response) == ["latitude", "longitude", "generationtime_ms", "utc_offset_seconds", "timezone",
                              "timezone_abbreviation", "elevation", "hourly_units", "hourly"]
    assert (response["latitude"], response["longitude"]) == (21.2, 106.0) == grid_cell(21.0278, 105.8342)
    assert (response["timezone"], response["utc_offset_seconds"]) == ("GMT", 0)
    assert response["hourly_units"] == {"time": "iso8601", "pm2_5": "μg/m³", "us_aqi": "USAQI"}
    assert list(response["hourly"]) == ["time", "pm2_5", "us_aqi"]
    assert response["hourly"]["time"][0] == "2024-03-01T00:00"
    assert all(v is None or isinstance(v, int) for v in response["hourly"]["us_aqi"])


def test_unrequested_variables_are_missing_columns(locations):
    frame = rows(SyntheticSource(), locations[:1], *JAN, variables=["pm2_5", "us_aqi"])
    assert list(frame.columns) == list(BRONZE_SOURCE_COLUMNS)
    assert frame["pm25"].notna().mean() > 0.95 and frame["aqi"].notna().mean() > 0.95
    assert frame["o3"].isna().all() and frame["aqi_co"].isna().all()


def test_a_dry_season_month_has_null_values_null_hours_and_spikes(january, locations):
    # a time entry with a null value, a whole hour null, out-of-range values
    assert january["pm25"].isna().sum() >= 10
    concentrations = january[["pm25", "pm10", "o3", "no2", "so2", "co"]]
    assert concentrations.isna().all(axis=1).sum() >= 3
    assert (january[["pm25", "pm10", "no2", "o3"]] < 0).to_numpy().sum() >= 1
    assert (january[["pm25", "pm10", "no2", "o3", "so2", "co"]] == 9999.0).to_numpy().sum() >= 1
    # ... but rarely: a backfill must still see mostly clean data
    assert january["pm25"].notna().mean() > 0.98
    assert set(january["location_key"]) == {loc.location_key for loc in locations}


def test_every_hour_comes_exactly_once_as_open_meteo_sends_it(january, locations):
    expected = pd.date_range("2024-01-01", "2024-01-31 23:00", freq="h", tz="UTC")
    for key, times in january.groupby("location_key")["ts_utc"]:
        assert times.tolist() == expected.tolist(), key


@pytest.mark.parametrize(("chunk", "now"), [
    (Chunk(dt.date(2024, 1, 1), dt.date(2024, 2, 1)), None),
    (Chunk(dt.date(2024, 2, 27), dt.date(2024, 3, 2)), None),  # across a month end and 29 February
    (Chunk(dt.date(2024, 6, 1), dt.date(2024, 6, 8)), dt.datetime(2024, 6, 3, 17, 45, tzinfo=dt.timezone.utc)),
])
def test_every_chunk_passes_bronzes_completeness_check(locations, chunk, now):
    fetched = fetch_chunk(SyntheticSource(), chunk, locations, HOURLY_VARIABLES,
                          now=now or dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc))
    hours_expected = chunk.days * 24 if now is None else 2 * 24 + 18  # 00:00 of the first day .. 17:00 on 3 June
    assert len(fetched.frame) == len(locations) * hours_expected
    assert not fetched.frame.duplicated(["location_key", "ts_utc"]).any()


def test_hanoi_winter_has_pollution_episodes(january):
    hanoi = january[january["location_key"] == "hanoi"].set_index("ts_utc").sort_index()
    clean = hanoi["pm25"].where((hanoi["pm25"] >= 0) & (hanoi["pm25"] < 1000))
    assert 50 <= clean.median() <= 150
    # 24-h means above 55.5 µg/m³ (AQI >= 151) ...
    daily = clean.resample("D").mean()
    assert (daily > 55.5).sum() >= 3
    # ... and Open-Meteo's own AQI >= 151 for at least 4 consecutive hours
    high = (hanoi["aqi"].fillna(0) >= 151).astype(int).to_numpy()
    longest = max(np.diff(np.flatnonzero(np.concatenate(([1], 1 - high, [1])))) - 1)
    assert longest >= 4


def test_seasons_regions_and_city_sizes(locations):
    source = SyntheticSource()
    pick = [loc for loc in locations if loc.location_key in ("hanoi", "hcmc", "dalat")]
    jan = rows(source, pick, *JAN).groupby("location_key")["pm25"].median()
    jul = rows(source, pick, dt.date(2024, 7, 1), dt.date(2024, 7, 31)).groupby("location_key")["pm25"].median()
    assert jan["hanoi"] > 2 * jul["hanoi"]  # northern dry-season winter
    assert jan["hanoi"] > 1.5 * jan["hcmc"] > jan["dalat"]  # the north, and bigger cities, dirtier


def test_diurnal_cycles_follow_the_sun_and_traffic(january):
    hcmc = january[(january["location_key"] == "hcmc") & january["uv_index"].between(0, 20)]
    local_hour = (hcmc["ts_utc"].dt.hour + 7) % 24
    uv = hcmc.groupby(local_hour)["uv_index"].median()
    assert uv.loc[[22, 23, 0, 1, 2, 3]].max() == 0.0
    assert uv.loc[12] > 5
    assert uv.max() <= 11.5
    o3 = hcmc.groupby(local_hour)["o3"].median()
    assert o3.loc[[13, 14, 15]].mean() > 1.5 * o3.loc[[1, 2, 3]].mean()
    no2 = hcmc.groupby(local_hour)["no2"].median()
    assert no2.loc[[7, 8, 19, 20]].mean() > no2.loc[[13, 14, 15]].mean()


def test_other_variables_are_in_plausible_ranges(january):
    sane = january
    def middle(column):  # the 1st..99th percentile, ignoring injected spikes
        return sane[column].quantile([0.01, 0.99]).to_numpy()
    assert 410 < middle("co2")[0] and middle("co2")[1] < 440
    assert 0.05 <= middle("aod")[0] and middle("aod")[1] <= 1.6
    assert 0 <= middle("dust")[0] and middle("dust")[1] < 30
    assert middle("co")[0] > 150 and middle("co")[1] < 4000
    aqi = sane["aqi"].dropna()
    assert aqi.between(0, 500).all() and aqi.max() >= 151


def test_a_month_of_24_cities_is_every_hour_of_every_city(locations):
    # (how fast it is belongs to the benchmarks: tests hold no timing targets)
    source = SyntheticSource()
    frame = rows(source, locations, dt.date(2024, 3, 1), dt.date(2024, 3, 31))
    assert len(frame) == 24 * 31 * 24
