"""The locations and pollutants files: the shipped data and every way a line can be broken."""

from __future__ import annotations

import json

import pytest

from jobs.config import DATA_DIR
from jobs.errors import InputError, InputFileError
from jobs.inputs import POLLUTANT_CODES, load_locations, load_pollutants

HANOI = {"location_key": "hanoi", "location_name": "Hanoi", "latitude": 21.0278, "longitude": 105.8342,
         "timezone": "Asia/Ho_Chi_Minh"}
HCMC = {**HANOI, "location_key": "hcmc", "location_name": "Ho Chi Minh City", "latitude": 10.8231,
        "longitude": 106.6297}
PM25 = {"pollutant_code": "pm25", "display_name": "PM2.5", "unit_default": "µg/m³", "aqi_timespan": "24h",
        "who_guideline_24h": 15}


def write_lines(tmp_path, *lines, name="file.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n",
                    encoding="utf-8")
    return path


def test_shipped_locations_are_24_vietnamese_cities_with_the_old_three_first():
    locations = load_locations(DATA_DIR / "locations.jsonl")
    assert len(locations) == 24
    assert len({loc.location_key for loc in locations}) == 24
    first = {loc.location_key: (loc.location_name, loc.latitude, loc.longitude) for loc in locations[:3]}
    assert first == {"hanoi": ("Hanoi", 21.0278, 105.8342), "hcmc": ("Ho Chi Minh City", 10.8231, 106.6297),
                     "danang": ("Da Nang", 16.0544, 108.2022)}
    for loc in locations:
        assert loc.timezone == "Asia/Ho_Chi_Minh"
        assert 8.0 < loc.latitude < 23.5 and 102.0 < loc.longitude < 110.0, loc
        assert loc.extra["region"] in ("north", "central", "south")


def test_shipped_pollutants_are_the_ten_codes_with_who_guidelines():
    pollutants = {p.pollutant_code: p for p in load_pollutants(DATA_DIR / "pollutants.jsonl")}
    assert tuple(pollutants) == POLLUTANT_CODES
    assert (pollutants["pm25"].aqi_timespan, pollutants["pm25"].who_guideline_24h) == ("24h", 15.0)
    assert pollutants["co"].who_guideline_24h == 4000.0
    assert pollutants["o3"].aqi_timespan == "8h" and pollutants["o3"].who_guideline_24h is None
    assert pollutants["co2"].unit_default == "ppm" and pollutants["co2"].aqi_timespan is None


def test_keys_restrict_in_file_order_and_blank_lines_are_skipped(tmp_path):
    path = write_lines(tmp_path, HANOI, "", "   ", HCMC)
    assert [loc.location_key for loc in load_locations(path, ["hcmc", "hanoi"])] == ["hanoi", "hcmc"]
    assert [loc.location_key for loc in load_locations(path)] == ["hanoi", "hcmc"]


def test_unknown_fields_are_kept_in_extra(tmp_path):
    path = write_lines(tmp_path, {**HANOI, "region": "north", "population": 8}, HCMC)
    hanoi, hcmc = load_locations(path)
    assert hanoi.extra == {"region": "north", "population": 8}
    assert hcmc.extra == {}


def test_broken_json_names_file_and_line(tmp_path):
    path = write_lines(tmp_path, HANOI, '{"location_key": "hcmc", "latitude": 10.8,', HCMC)
    with pytest.raises(InputFileError) as caught:
        load_locations(path)
    assert caught.value.line == 2
    message = str(caught.value)
    assert message.startswith(f"{path}:2: not valid JSON")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"latitude": None}, "field 'latitude' must be a number, got null"),
        ({"latitude": "21.0"}, "field 'latitude' must be a number"),
        ({"longitude": True}, "field 'longitude' must be a number, got a boolean"),
        ({"latitude": 91.5}, "latitude 91.5 is out of range -90..90"),
        ({"longitude": -180.01}, "longitude -180.01 is out of range -180..180"),
        ({"location_key": "Ha Noi"}, "location_key 'Ha Noi' must match [a-z0-9_]+"),
        ({"timezone": "Asia/Hanoi_City"}, "timezone 'Asia/Hanoi_City' is not an IANA time zone"),
        ({"location_name": ""}, "field 'location_name' is empty"),
    ],
)
def test_bad_field_names_file_line_and_problem(tmp_path, change, problem):
    path = write_lines(tmp_path, HCMC, {**HANOI, **change})
    with pytest.raises(InputFileError, match=r":2: ") as caught:
        load_locations(path)
    assert problem in str(caught.value)


def test_missing_field_is_named(tmp_path):
    row = {k: v for k, v in HANOI.items() if k != "timezone"}
    with pytest.raises(InputFileError, match=r":1: missing field 'timezone'$"):
        load_locations(write_lines(tmp_path, row))


def test_a_line_that_is_not_an_object_is_refused(tmp_path):
    with pytest.raises(InputFileError, match=r":1: expected a JSON object, got an array"):
        load_locations(write_lines(tmp_path, "[1, 2]"))


def test_duplicate_key_names_both_lines(tmp_path):
    path = write_lines(tmp_path, HANOI, HCMC, {**HANOI, "location_name": "Ha Noi"})
    with pytest.raises(InputFileError) as caught:
        load_locations(path)
    assert caught.value.line == 3
    assert "duplicate location_key 'hanoi' (first on line 1)" in str(caught.value)


def test_missing_file_has_no_line(tmp_path):
    with pytest.raises(InputFileError) as caught:
        load_locations(tmp_path / "nope.jsonl")
    assert caught.value.line is None
    assert str(caught.value) == f"{tmp_path / 'nope.jsonl'}: file not found"


def test_unknown_requested_key_names_key_and_file(tmp_path):
    path = write_lines(tmp_path, HANOI)
    with pytest.raises(InputError, match=r"location key 'saigon' is not in .*file.jsonl"):
        load_locations(path, ["hanoi", "saigon"])


def test_empty_result_is_an_error(tmp_path):
    with pytest.raises(InputError, match="no locations"):
        load_locations(write_lines(tmp_path, ""))
    with pytest.raises(InputError, match="no locations"):
        load_locations(write_lines(tmp_path, HANOI), [])


def test_unknown_pollutant_code_in_file_lists_the_known_codes(tmp_path):
    path = write_lines(tmp_path, PM25, {**PM25, "pollutant_code": "nh3"})
    with pytest.raises(InputFileError, match=r":2: unknown pollutant code 'nh3'; known codes: pm25, pm10, o3"):
        load_pollutants(path)


def test_unknown_requested_pollutant_lists_the_known_codes(tmp_path):
    path = write_lines(tmp_path, PM25)
    with pytest.raises(InputError, match=r"unknown pollutant code 'pm2_5'; known codes: pm25, pm10"):
        load_pollutants(path, ["pm2_5"])
    with pytest.raises(InputError, match=r"pollutant code 'no2' is not in"):
        load_pollutants(path, ["no2"])


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"aqi_timespan": "12h"}, "aqi_timespan '12h' must be 24h, 8h, 1h or null"),
        ({"who_guideline_24h": "15"}, "field 'who_guideline_24h' must be a number"),
        ({"who_guidline_24h": 15}, "unknown field 'who_guidline_24h'"),
        ({"pollutant_code": 25}, "field 'pollutant_code' must be a string, got a number (25)"),
    ],
)
def test_bad_pollutant_line(tmp_path, change, problem):
    with pytest.raises(InputFileError, match=r":1: ") as caught:
        load_pollutants(write_lines(tmp_path, {**PM25, **change}))
    assert problem in str(caught.value)


def test_pollutant_codes_restrict_in_file_order_and_guideline_is_optional(tmp_path):
    co2 = {"pollutant_code": "co2", "display_name": "CO2", "unit_default": "ppm", "aqi_timespan": None}
    path = write_lines(tmp_path, PM25, co2)
    pollutants = load_pollutants(path, ["co2", "pm25"])
    assert [p.pollutant_code for p in pollutants] == ["pm25", "co2"]
    assert pollutants[1].who_guideline_24h is None
    with pytest.raises(InputFileError, match="duplicate pollutant_code 'pm25' \\(first on line 1\\)"):
        load_pollutants(write_lines(tmp_path, PM25, co2, PM25))
