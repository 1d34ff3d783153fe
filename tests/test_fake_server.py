"""The fake Open-Meteo server: wire format, validation, limits, faults and a clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from jobs.config import DATA_DIR, PROJECT_ROOT
from jobs.inputs import load_locations
from jobs.sources.fake_server import LIMIT_REASONS, FakeOpenMeteoServer
from jobs.sources.synthetic import SyntheticSource

pytestmark = pytest.mark.integration

HANOI = "latitude=21.0278&longitude=105.8342"
MONTH = "start_date=2024-01-01&end_date=2024-01-31"
DAY = "start_date=2024-01-01&end_date=2024-01-01"
ALL = ("pm2_5,pm10,nitrogen_dioxide,ozone,sulphur_dioxide,carbon_monoxide,aerosol_optical_depth,dust,uv_index,"
       "carbon_dioxide,us_aqi,us_aqi_pm2_5,us_aqi_pm10,us_aqi_nitrogen_dioxide,us_aqi_ozone,"
       "us_aqi_sulphur_dioxide,us_aqi_carbon_monoxide")


def get(server: FakeOpenMeteoServer, query: str, timeout: float = 5.0) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/air-quality?{query}", timeout=timeout)


@pytest.fixture
def server():
    with FakeOpenMeteoServer(locations=load_locations(DATA_DIR / "locations.jsonl")) as srv:
        yield srv


def test_one_coordinate_gives_one_object_in_the_real_shape(server):
    response = get(server, f"{HANOI}&hourly=pm2_5,us_aqi&{MONTH}&timezone=GMT&domains=cams_global")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict)
    assert list(body) == ["latitude", "longitude", "generationtime_ms", "utc_offset_seconds", "timezone",
                          "timezone_abbreviation", "elevation", "hourly_units", "hourly"]
    assert body["hourly_units"] == {"time": "iso8601", "pm2_5": "μg/m³", "us_aqi": "USAQI"}
    assert len(body["hourly"]["time"]) == len(body["hourly"]["pm2_5"]) >= 31 * 24 - 5
    # known coordinates are served as that location, so the data equals the synthetic source's
    want = SyntheticSource().response("hanoi", 21.0278, 105.8342, *_jan(), ["pm2_5", "us_aqi"])
    assert body["hourly"] == want["hourly"]


def test_several_coordinates_give_a_list_with_location_ids(server):
    response = get(server, f"latitude=21.0278,10.8231,16.0544&longitude=105.8342,106.6297,108.2022"
                           f"&hourly=pm2_5&{MONTH}")
    body = response.json()
    assert isinstance(body, list) and len(body) == 3
    assert "location_id" not in body[0] and [b["location_id"] for b in body[1:]] == [1, 2]
    assert [b["latitude"] for b in body] == [21.2, 10.8, 16.0]


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (f"{HANOI}&hourly=pm2_5,pollen&{MONTH}", "Cannot initialize VariableOrDerived<CamsVariable, "
                                                 "CamsVariableDerived> from invalid String value pollen."),
        (f"{HANOI}&hourly=pm2_5&start_date=2024-1-01&end_date=2024-01-31",
         "Invalid date format. Make sure to use 'YYYY-MM-DD'"),
        (f"{HANOI}&hourly=pm2_5&start_date=2024-02-01&end_date=2024-01-31",
         "End-date must be larger or equals than start-date"),
        (f"{HANOI}&hourly=pm2_5&start_date=2012-12-31&end_date=2013-01-31",
         "Parameter 'start_date' is out of allowed range from 2013-01-01 to "),
        (f"latitude=21.0,10.8&longitude=105.8&hourly=pm2_5&{MONTH}",
         "Parameter 'latitude' and 'longitude' must have the same number of elements"),
        (f"latitude=91&longitude=105.8&hourly=pm2_5&{MONTH}", "Latitude must be in range of -90 to 90°. Given: 91.0."),
        (f"{HANOI}&hourly=pm2_5&start_date=2024-01-01", "Both 'start_date' and 'end_date' must be set in the url"),
        (f"{HANOI}&hourly=pm2_5&{MONTH}&domains=cams_asia", "Cannot initialize Domain from invalid String value"),
    ],
)
def test_bad_parameters_get_the_real_400_body(server, query, reason):
    response = get(server, query)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] is True and body["reason"].startswith(reason)


def test_minutely_quota_counts_weight_and_resets_with_the_clock():
    now = [120.0]
    with FakeOpenMeteoServer(calls_per_minute=5, clock=lambda: now[0]) as server:
        assert get(server, f"{HANOI}&hourly={ALL}&{MONTH}").status_code == 200  # weight 3.76
        assert get(server, f"{HANOI}&hourly={ALL}&{MONTH}").status_code == 200  # 7.53: over 5 now
        refused = get(server, f"{HANOI}&hourly=pm2_5&{MONTH}")
        assert (refused.status_code, refused.json()["reason"]) == (429, LIMIT_REASONS["minute"])
        now[0] = 180.0  # the next clock minute
        assert get(server, f"{HANOI}&hourly=pm2_5&{MONTH}").status_code == 200
        assert server.stats.weighted_calls == pytest.approx(2 * 3.764 + 1.0, abs=1e-3)


def test_failed_calls_count_against_the_quota():
    with FakeOpenMeteoServer(calls_per_day=2, clock=lambda: 100.0) as server:
        assert get(server, f"{HANOI}&hourly=nope&{DAY}").status_code == 400
        assert get(server, f"{HANOI}&hourly=nope&{DAY}").status_code == 400
        refused = get(server, f"{HANOI}&hourly=pm2_5&{DAY}")
        assert (refused.status_code, refused.json()["reason"]) == (429, LIMIT_REASONS["day"])


def test_requests_beyond_max_in_flight_are_refused():
    with FakeOpenMeteoServer(latency_s=0.3, max_in_flight=1) as server:
        answers = []
        together = threading.Barrier(2)

        def ask():
            together.wait()
            answers.append(get(server, f"{HANOI}&hourly=pm2_5&{DAY}"))

        threads = [threading.Thread(target=ask) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(a.status_code for a in answers) == [200, 429]
        assert [a.json()["reason"] for a in answers if a.status_code == 429] == ["Too many concurrent requests"]
        assert server.stats.max_in_flight == 2 and server.stats.by_status == {200: 1, 429: 1}


def test_injected_faults_are_served_in_order_one_per_request(server):
    server.inject("500", "malformed", "truncated", "429-retry-after:3", "502")
    answers = [get(server, f"{HANOI}&hourly=pm2_5&{DAY}") for _ in range(6)]
    assert [a.status_code for a in answers] == [500, 200, 200, 429, 502, 200]
    assert answers[0].json() == {"reason": "Internal Server Error", "error": True}
    with pytest.raises(ValueError):
        json.loads(answers[1].content)
    # truncated: the first half of the real body (generationtime_ms is measured, so skip past it)
    cut, full = (a.content.split(b'"utc_offset_seconds"', 1)[1] for a in (answers[2], answers[5]))
    assert full.startswith(cut) and len(cut) < len(full) * 0.6
    with pytest.raises(ValueError):
        json.loads(answers[2].content)
    assert answers[3].headers["retry-after"] == "3"
    assert answers[4].headers["content-type"] == "text/html"
    assert server.pending_faults == 0 and server.stats.faults == 5


def test_damaged_locations_get_broken_data_in_the_real_shape_until_reset(server):
    whole = get(server, f"{HANOI}&hourly=pm2_5,ozone&{DAY}").json()
    assert len(whole["hourly"]["time"]) == 24
    server.damage("hanoi", "drop-last-hours:5")
    cut = get(server, f"{HANOI}&hourly=pm2_5,ozone&{DAY}").json()
    assert cut["hourly"] == {k: v[:19] for k, v in whole["hourly"].items()}
    server.damage("hanoi", "empty-time")
    assert get(server, f"{HANOI}&hourly=pm2_5,ozone&{DAY}").json()["hourly"] == {"time": [], "pm2_5": [], "ozone": []}
    server.damage("hanoi", "drop-variable:ozone")
    body = get(server, f"{HANOI}&hourly=pm2_5,ozone&{DAY}").json()
    assert list(body["hourly"]) == ["time", "pm2_5"] and list(body["hourly_units"]) == ["time", "pm2_5"]
    server.damage("hanoi", "repeat-hour:3")
    body = get(server, f"latitude=21.0278,10.8231&longitude=105.8342,106.6297&hourly=pm2_5&{DAY}").json()
    assert body[0]["hourly"]["time"][2:6] == ["2024-01-01T02:00", "2024-01-01T03:00", "2024-01-01T03:00",
                                                "2024-01-01T04:00"]
    assert len(body[0]["hourly"]["pm2_5"]) == 25 and len(body[1]["hourly"]["time"]) == 24  # hcmc intact
    server.reset()
    assert get(server, f"{HANOI}&hourly=pm2_5,ozone&{DAY}").json()["hourly"] == whole["hourly"]
    with pytest.raises(ValueError, match="unknown damage 'drop-hours:3'"):
        server.damage("hanoi", "drop-hours:3")


def test_random_faults_are_reproducible_with_a_seed():
    def statuses(seed):
        with FakeOpenMeteoServer(fault_rate=0.5, fault_kinds=("500", "503"), fault_seed=seed) as server:
            return [get(server, f"{HANOI}&hourly=pm2_5&{DAY}").status_code for _ in range(12)]
    first = statuses(4)
    assert first == statuses(4)
    assert 200 in first and set(first) - {200}, first  # some faults, some answers


def test_timeout_fault_answers_only_after_the_sleep():
    with FakeOpenMeteoServer(timeout_sleep_s=0.3) as server:
        server.inject("timeout")
        with pytest.raises(httpx.ReadTimeout):
            get(server, f"{HANOI}&hourly=pm2_5&{DAY}", timeout=0.1)
        started = time.monotonic()
        server.inject("timeout")
        assert get(server, f"{HANOI}&hourly=pm2_5&{DAY}").status_code == 200
        assert time.monotonic() - started >= 0.3


def test_missing_api_key_gets_the_real_401():
    with FakeOpenMeteoServer(api_key_required=True) as server:
        response = get(server, f"{HANOI}&hourly=pm2_5&{DAY}")
        assert response.status_code == 401
        assert response.json() == {"reason": "API key required. Please add &apikey= to the URL.", "error": True}
        assert get(server, f"{HANOI}&hourly=pm2_5&{DAY}&apikey=any").status_code == 200


def test_stop_leaves_no_threads_even_with_a_handler_asleep():
    before = set(threading.enumerate())
    server = FakeOpenMeteoServer(timeout_sleep_s=30.0).start()
    server.inject("timeout")
    with pytest.raises(httpx.ReadTimeout):
        get(server, f"{HANOI}&hourly=pm2_5&{DAY}", timeout=0.2)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2.0
    assert set(threading.enumerate()) - before == set()
    with pytest.raises(RuntimeError, match="not running"):
        server.url


def test_unknown_paths_are_404(server):
    assert httpx.get(f"{server.url}/v1/forecast?{HANOI}").status_code == 404


@pytest.mark.process
def test_runs_as_a_command_and_stops_on_ctrl_c():
    command = [sys.executable, "-m", "jobs.sources.fake_server", "--port", "0", "--latency", "0",
               "--calls-per-minute", "600", "--max-in-flight", "1", "--seed", "7"]
    with subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}) as process:
        try:
            url = process.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            assert httpx.get(f"{url}/v1/air-quality?{HANOI}&hourly=pm2_5&{DAY}").status_code == 200
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()


def _jan():
    import datetime as dt

    return dt.date(2024, 1, 1), dt.date(2024, 1, 31)
