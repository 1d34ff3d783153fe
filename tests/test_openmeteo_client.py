"""The Open-Meteo client against the fake server over real HTTP, and the parser of its answers."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import random
import threading
import time
import traceback

import httpx
import numpy as np
import pandas as pd
import pytest

from jobs.config import DATA_DIR, SourceConfig
from jobs.errors import IncompleteChunkError, SourceError, SourceRequestError, SourceUnavailable
from jobs.inputs import Location, load_locations
from jobs.sources import (
    BRONZE_SOURCE_COLUMNS,
    HOURLY_VARIABLES,
    check_complete,
    responses_to_frame,
    variables_for,
)
from jobs.sources.fake_server import FakeOpenMeteoServer
from jobs.sources.openmeteo import OpenMeteoClient, request_weight
from jobs.sources.synthetic import SyntheticSource

START, END = dt.date(2024, 1, 1), dt.date(2024, 1, 2)
KEY = "s3cr3t-KEY-4242"
UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def locations() -> list[Location]:
    return load_locations(DATA_DIR / "locations.jsonl")[:3]


@pytest.fixture
def server(locations):
    with FakeOpenMeteoServer(locations=locations, timeout_sleep_s=1.0) as srv:
        yield srv


def client_for(server: FakeOpenMeteoServer, **overrides) -> OpenMeteoClient:
    """A client with backoffs tiny enough for tests."""
    options = dict(base_url=server.url, timeout_s=2.0, max_attempts=4, backoff_s=0.01, backoff_max_s=0.05,
                   rng=random.Random(1))
    return OpenMeteoClient(**{**options, **overrides})


def expected(locations, variables=HOURLY_VARIABLES) -> list[dict]:
    return SyntheticSource().fetch(locations, START, END, variables)


def same_data(got: list[dict], want: list[dict]) -> bool:
    return [r["hourly"] for r in got] == [r["hourly"] for r in want]


# -- against the fake server ---------------------------------------------------------------


@pytest.mark.integration
def test_batches_return_one_object_per_location_in_order(server, locations):
    client = client_for(server, batch_size=2)
    got = client.fetch(locations, START, END, HOURLY_VARIABLES)
    assert same_data(got, expected(locations))
    assert [r["latitude"] for r in got] == [21.2, 10.8, 16.0]
    assert got[1]["location_id"] == 1  # the second object of a list answer, as the API sends it
    assert client.stats.requests == server.stats.requests == 2
    assert client.stats.weighted_calls == pytest.approx(3 * 1.7)


@pytest.mark.integration
def test_429_with_retry_after_is_waited_out(server, locations):
    server.inject("429-retry-after:1")
    client = client_for(server)
    started = time.monotonic()
    got = client.fetch(locations[:1], START, END, ["pm2_5"])
    assert time.monotonic() - started >= 1.0
    assert same_data(got, expected(locations[:1], ["pm2_5"]))
    assert (client.stats.responses_429, client.stats.retries) == (1, 1)


@pytest.mark.integration
def test_too_many_concurrent_requests_then_success(locations):
    with FakeOpenMeteoServer(locations=locations, latency_s=0.3, max_in_flight=1) as server:
        other_got: list = []
        other = threading.Thread(
            target=lambda: other_got.extend(client_for(server).fetch(locations[1:2], START, END, ["pm2_5"])))
        other.start()
        while server.serving < 1:  # the other request holds the only slot
            time.sleep(0.005)
        client = client_for(server, max_attempts=10, backoff_s=0.1, backoff_max_s=0.2)
        got = client.fetch(locations[:1], START, END, ["pm2_5"])
        other.join()
    assert same_data(got, expected(locations[:1], ["pm2_5"])) and len(other_got) == 1
    assert client.stats.by_status[429] >= 1 and client.stats.by_status[200] == 1
    assert server.stats.by_status[429] >= 1 and server.stats.max_in_flight >= 2


@pytest.mark.integration
@pytest.mark.parametrize("fault", ["500", "502", "503", "504", "timeout", "malformed", "truncated"])
def test_transient_faults_are_retried_to_success(server, locations, fault):
    server.inject(fault)
    client = client_for(server, timeout_s=0.3)
    got = client.fetch(locations[:2], START, END, HOURLY_VARIABLES)
    assert same_data(got, expected(locations[:2]))
    assert client.stats.retries == 1
    assert server.stats.faults == 1 and server.pending_faults == 0
    if fault == "timeout":
        assert client.stats.transport_errors == 1


@pytest.mark.integration
def test_retries_exhausted_raise_unavailable_naming_the_last_problem(server, locations):
    server.inject("500", "timeout", "503")
    client = client_for(server, max_attempts=3, timeout_s=0.3)
    with pytest.raises(SourceUnavailable, match=r"failed 3 time\(s\).*last problem: HTTP 503: 503 Service Temporarily"):
        client.fetch(locations[:1], START, END, ["pm2_5"])
    assert client.stats.requests == 3 and client.stats.retries == 2


@pytest.mark.integration
def test_a_400_is_not_retried_and_carries_the_api_reason(server, locations):
    client = client_for(server)
    with pytest.raises(SourceRequestError) as caught:
        client.fetch(locations[:1], START, END, ["pm2_5", "pm1"])
    assert caught.value.status == 400
    assert caught.value.reason.endswith("from invalid String value pm1.")
    assert str(caught.value).startswith("open-meteo refused the request (HTTP 400): Cannot initialize")
    assert server.stats.requests == 1


@pytest.mark.integration
def test_dates_before_2013_are_refused_by_the_api(server, locations):
    with pytest.raises(SourceRequestError, match=r"Parameter 'start_date' is out of allowed range from 2013-01-01"):
        client_for(server).fetch(locations[:1], dt.date(2012, 12, 31), END, ["pm2_5"])


@pytest.mark.integration
def test_hourly_quota_fails_fast_instead_of_sleeping(locations):
    with FakeOpenMeteoServer(locations=locations, calls_per_hour=1, clock=lambda: 7200.0) as server:
        client = client_for(server)
        client.fetch(locations[:1], START, END, ["pm2_5"])
        with pytest.raises(SourceUnavailable, match="quota used up.*Hourly API request limit exceeded"):
            client.fetch(locations[:1], START, END, ["pm2_5"])
    assert client.stats.retries == 0


@pytest.mark.integration
def test_the_api_key_is_sent_but_never_logged(locations, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeOpenMeteoServer(locations=locations, api_keys=[KEY]) as server:
        server.inject("503")
        client = client_for(server, api_key=KEY)
        got = client.fetch(locations[:1], START, END, ["pm2_5"])
    assert same_data(got, expected(locations[:1], ["pm2_5"]))  # accepted: the key was sent
    assert "apikey=***" in caplog.text  # httpx and the server did log the URL ...
    assert KEY not in caplog.text  # ... with the key masked
    assert KEY not in repr(client)


@pytest.mark.integration
def test_key_problems_are_not_retried_and_do_not_leak(locations):
    with FakeOpenMeteoServer(locations=locations, api_keys=[KEY]) as server:
        with pytest.raises(SourceRequestError, match=r"HTTP 401\): API key required") as missing:
            client_for(server).fetch(locations[:1], START, END, ["pm2_5"])
        wrong = "wrong-" + KEY
        with pytest.raises(SourceRequestError, match="The supplied API key is invalid") as invalid:
            client_for(server, api_key=wrong).fetch(locations[:1], START, END, ["pm2_5"])
        assert server.stats.requests == 2
    assert missing.value.status == 401 and invalid.value.status == 400
    assert wrong not in "".join(traceback.format_exception(invalid.value))


@pytest.mark.integration
def test_connection_failures_never_show_the_key(caplog):
    caplog.set_level(logging.DEBUG)
    with FakeOpenMeteoServer() as server:
        url = server.url  # a port that refuses connections once the server is gone
    client = OpenMeteoClient(base_url=url, api_key=KEY, max_attempts=2, backoff_s=0.01, timeout_s=1.0)
    with pytest.raises(SourceUnavailable, match=r"connection failed \(ConnectError\)") as caught:
        client.fetch([Location("x", "X", 1.0, 2.0, "UTC")], START, END, ["pm2_5"])
    text = "".join(traceback.format_exception(caught.value)) + repr(caught.value) + caplog.text
    assert KEY not in text
    assert caught.value.__context__ is None and caught.value.__cause__ is None


# -- without a server ----------------------------------------------------------------------


def test_backoff_is_full_jitter_under_an_exponential_cap_and_retry_after_is_a_floor():
    answers = iter([httpx.Response(500), httpx.Response(500), httpx.Response(500),
                    httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200, json={"hourly": {}})])
    slept: list[float] = []
    # A MockTransport because only the sleeps are under test: no real waiting wanted.
    http = httpx.Client(transport=httpx.MockTransport(lambda request: next(answers)))
    client = OpenMeteoClient(base_url="http://x", http=http, max_attempts=5, backoff_s=1.0, backoff_max_s=3.0,
                             sleep=slept.append, rng=random.Random(0))
    client.fetch([Location("x", "X", 1.0, 2.0, "UTC")], START, END, ["pm2_5"])
    assert len(slept) == 4
    for delay, cap in zip(slept[:3], (1.0, 2.0, 3.0)):
        assert 0.0 <= delay <= cap
    assert slept[3] >= 7.0


def test_from_config_takes_every_knob():
    cfg = SourceConfig(kind="open-meteo", api_url="http://h:1", api_key="k", timeout_s=5, max_attempts=2,
                       backoff_s=0.5, backoff_max_s=4, batch_size=7, domains="cams_europe", cell_selection="land")
    client = OpenMeteoClient.from_config(cfg)
    assert (client.base_url, client.timeout_s, client.max_attempts, client.batch_size) == ("http://h:1", 5, 2, 7)
    assert (client.backoff_s, client.backoff_max_s, client.domains, client.cell_selection) == (0.5, 4, "cams_europe", "land")
    assert "k" not in repr(client).replace("api_key", "")
    client.close()


@pytest.mark.parametrize(
    ("locations", "variables", "days", "weight"),
    [(1, 17, 31, 3.764), (1, 17, 14, 1.7), (1, 5, 31, 1.107), (1, 5, 7, 1.0), (3, 17, 30, 3 * 3.643)],
)
def test_request_weight(locations, variables, days, weight):
    assert request_weight(locations, variables, days) == pytest.approx(weight, abs=1e-3)
    assert round(request_weight(1, 17, 31), 1) == 3.8


def test_variables_for_pollutants():
    assert variables_for(None) == HOURLY_VARIABLES and len(HOURLY_VARIABLES) == 17
    assert variables_for(["pm25"]) == ("pm2_5", "us_aqi", "us_aqi_pm2_5")
    assert variables_for(["co2", "o3"]) == ("ozone", "carbon_dioxide", "us_aqi", "us_aqi_ozone")
    with pytest.raises(ValueError, match="unknown pollutant code 'pm2_5'"):
        variables_for(["pm2_5"])


def wire(times, **hourly) -> dict:
    return {"latitude": 21.2, "longitude": 106.0, "generationtime_ms": 0.5, "utc_offset_seconds": 0,
            "timezone": "GMT", "timezone_abbreviation": "GMT", "elevation": 12.0,
            "hourly_units": {"time": "iso8601"}, "hourly": {"time": times, **hourly}}


HANOI = Location("hanoi", "Hanoi", 21.0278, 105.8342, "Asia/Ho_Chi_Minh")
HCMC = Location("hcmc", "Ho Chi Minh City", 10.8231, 106.6297, "Asia/Ho_Chi_Minh")
DANANG = Location("danang", "Da Nang", 16.0544, 108.2022, "Asia/Ho_Chi_Minh")


def test_frame_columns_dtypes_and_values():
    times = ["2024-01-01T00:00", "2024-01-01T01:00", "2024-01-01T01:00", "2024-01-01T02:00"]
    response = wire(times, pm2_5=[10.5, None, 12.0, 13.0], us_aqi=[50, None, 57, 60.0], carbon_dioxide=[420.0] * 4)
    frame = responses_to_frame([response], [HANOI], "open-meteo", dt.datetime(2030, 1, 1, tzinfo=UTC), "cams_global")
    assert list(frame.columns) == list(BRONZE_SOURCE_COLUMNS)
    assert str(frame["ts_utc"].dtype) == "datetime64[ns, UTC]"
    assert frame["ts_utc"].iloc[1] == pd.Timestamp("2024-01-01T01:00", tz="UTC")
    assert frame["date_utc"].iloc[0] == dt.date(2024, 1, 1) and type(frame["date_utc"].iloc[0]) is dt.date
    assert (frame["latitude"].iloc[0], frame["longitude"].iloc[0]) == (21.2, 106.0)  # the grid cell
    assert all(str(frame[c].dtype) == "Int32" for c in ("aqi", "aqi_pm25", "aqi_co"))
    assert all(frame[c].dtype == np.float64 for c in ("pm25", "o3", "co2"))
    assert frame["aqi"].tolist()[:2] == [50, pd.NA] and frame["aqi"].iloc[3] == 60
    assert np.isnan(frame["pm25"].iloc[1]) and frame["pm25"].iloc[2] == 12.0
    assert len(frame) == 4  # the duplicated 01:00 is kept, as received
    assert frame["o3"].isna().all() and frame["aqi_o3"].isna().all()  # not requested
    assert set(frame["model_domain"]) == {"cams_global"} and set(frame["source"]) == {"open-meteo"}
    assert not frame.select_dtypes(object).isin(["nan", "NaN", "None"]).any().any()


def test_forecast_hours_after_now_are_dropped():
    times = [f"2024-06-01T{h:02d}:00" for h in range(6)]
    now = dt.datetime(2024, 6, 1, 3, 30, tzinfo=UTC)
    frame = responses_to_frame([wire(times, pm2_5=[1.0] * 6)], [HANOI], "open-meteo", now, "cams_global")
    assert frame["ts_utc"].dt.hour.tolist() == [0, 1, 2, 3]


def test_bad_responses_name_the_location():
    now = dt.datetime(2030, 1, 1, tzinfo=UTC)
    good = wire(["2024-01-01T00:00"], pm2_5=[1.0])
    with pytest.raises(SourceError, match=r"'hcmc'.*hourly.pm2_5 has 2 values for 1 times"):
        responses_to_frame([good, wire(["2024-01-01T00:00"], pm2_5=[1.0, 2.0])], [HANOI, HCMC], "x", now, "d")
    with pytest.raises(SourceError, match=r"'hcmc' has no hourly.time"):
        responses_to_frame([good, {"latitude": 1.0, "longitude": 2.0, "hourly": {}}], [HANOI, HCMC], "x", now, "d")
    with pytest.raises(SourceError, match="2 responses for 1 locations"):
        responses_to_frame([good, good], [HANOI], "x", now, "d")


def test_no_responses_give_an_empty_frame_with_the_bronze_columns():
    frame = responses_to_frame([], [], "synthetic", dt.datetime(2030, 1, 1, tzinfo=UTC), "synthetic")
    assert list(frame.columns) == list(BRONZE_SOURCE_COLUMNS) and len(frame) == 0
    assert str(frame["aqi"].dtype) == "Int32" and str(frame["ts_utc"].dtype) == "datetime64[ns, UTC]"


def test_a_retry_after_beyond_the_cap_is_waited_out_only_up_to_the_cap():
    from jobs.sources.openmeteo import RETRY_AFTER_CAP_S

    answers = iter([httpx.Response(429, headers={"Retry-After": "3600"}), httpx.Response(200, json={"hourly": {}})])
    slept: list[float] = []
    http = httpx.Client(transport=httpx.MockTransport(lambda request: next(answers)))
    client = OpenMeteoClient(base_url="http://x", http=http, max_attempts=2, backoff_s=1.0, backoff_max_s=3.0,
                             sleep=slept.append, rng=random.Random(0))
    with contextlib.suppress(SourceError):  # only the wait is under test here, not the (empty) answer
        client.fetch([Location("x", "X", 1.0, 2.0, "UTC")], START, END, ["pm2_5"])
    assert slept == [RETRY_AFTER_CAP_S] and RETRY_AFTER_CAP_S == 120.0


@pytest.mark.integration
@pytest.mark.parametrize("period, permanent", [("hour", False), ("day", True)])
def test_a_used_up_daily_quota_is_permanent_an_hourly_one_is_not(period, permanent, locations):
    from ray_backfill.executors.base import is_permanent

    limits = {"calls_per_hour": 1} if period == "hour" else {"calls_per_day": 1}
    with FakeOpenMeteoServer(locations=locations, clock=lambda: 7200.0, **limits) as server:
        client = client_for(server)
        client.fetch(locations[:1], START, END, ["pm2_5"])
        with pytest.raises(SourceUnavailable, match="quota used up") as caught:
            client.fetch(locations[:1], START, END, ["pm2_5"])
    assert caught.value.permanent is permanent and is_permanent(caught.value) is permanent


# -- completeness of a chunk's answer --------------------------------------------------------

MARCH_2 = pd.date_range("2024-03-01", "2024-03-02 23:00", freq="h", tz="UTC")  # 48 hours


def labels(index: pd.DatetimeIndex) -> list[str]:
    return [t.strftime("%Y-%m-%dT%H:%M") for t in index]


def check(responses, locations=(HANOI,), variables=("pm2_5", "us_aqi"), expected=MARCH_2):
    frame = responses_to_frame(responses, locations, "open-meteo", dt.datetime(2030, 1, 1, tzinfo=UTC), "d")
    check_complete(responses, frame, locations, variables, expected, "open-meteo", "2024-03-01_2024-03-02")


def full(index=MARCH_2, **override) -> dict:
    n = len(index)
    return wire(labels(index), **{"pm2_5": [1.0] * n, "us_aqi": [5] * n, **override})


def test_a_complete_answer_may_hold_null_values_and_all_null_hours():
    check([full(pm2_5=[None] * 48, us_aqi=[None] * 47 + [7])])
    check([full(), full()], locations=(HANOI, HCMC))
    check([wire([])], expected=MARCH_2[:0], variables=())  # a chunk entirely after now expects no hour


@pytest.mark.parametrize(("hours", "gap"), [
    (MARCH_2[:40], "answered 40 of 48 hours, missing 2024-03-02T16:00Z .. 2024-03-02T23:00Z"),
    (MARCH_2[:0], "answered 0 of 48 hours, missing 2024-03-01T00:00Z .. 2024-03-02T23:00Z"),
    (MARCH_2.delete([3, 10, 11, 20, 30, 31, 32]),
     "answered 41 of 48 hours, missing 2024-03-01T03:00Z, 2024-03-01T10:00Z .. 2024-03-01T11:00Z, "
     "2024-03-01T20:00Z and 1 more gap"),
])
def test_missing_hours_fail_naming_location_chunk_and_gap(hours, gap):
    with pytest.raises(IncompleteChunkError) as caught:
        check([full(), full(hours)], locations=(HANOI, HCMC))
    assert str(caught.value) == (f"incomplete chunk 2024-03-01_2024-03-02 for location 'hcmc': open-meteo {gap}; "
                                 "nothing was written")
    assert (caught.value.chunk, caught.value.location) == ("2024-03-01_2024-03-02", "hcmc")
    assert isinstance(caught.value, SourceError)


def test_an_absent_variable_fails_even_when_every_hour_is_there():
    answer = full()
    del answer["hourly"]["us_aqi"]
    with pytest.raises(IncompleteChunkError, match=r"for location 'hanoi': open-meteo left out variable 'us_aqi';"):
        check([answer])


def test_repeated_hours_fail_and_every_problem_of_the_location_is_named():
    hours = MARCH_2[:5].append(MARCH_2[4:])  # 04:00 twice, the copy right after it
    with pytest.raises(IncompleteChunkError) as caught:
        check([full(hours)])
    assert str(caught.value).endswith("open-meteo sent 1 hour more than once (2024-03-01T04:00Z); nothing was written")
    answer = full(MARCH_2[:47].append(MARCH_2[:1]))
    del answer["hourly"]["pm2_5"]
    with pytest.raises(IncompleteChunkError) as caught:
        check([full(), answer, full(MARCH_2[1:])], locations=(HANOI, HCMC, DANANG))
    assert str(caught.value) == (
        "incomplete chunk 2024-03-01_2024-03-02 for location 'hcmc': open-meteo left out variable 'pm2_5'; "
        "answered 47 of 48 hours, missing 2024-03-02T23:00Z; sent 1 hour more than once (2024-03-01T00:00Z); "
        "1 more location incomplete; nothing was written")


def test_expected_hours_run_from_the_chunk_start_to_its_last_hour_not_after_now():
    from jobs.bronze import expected_hours
    from jobs.dates import Chunk

    chunk = Chunk(dt.date(2024, 3, 1), dt.date(2024, 3, 3))
    assert expected_hours(chunk, dt.datetime(2030, 1, 1, tzinfo=UTC)).equals(MARCH_2)
    assert expected_hours(chunk, dt.datetime(2024, 3, 2, 5, 59)).equals(MARCH_2[:30])  # naive: UTC
    assert expected_hours(chunk, dt.datetime(2024, 3, 2, 7, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))).equals(
        MARCH_2[:30])
    assert len(expected_hours(chunk, dt.datetime(2024, 2, 1, tzinfo=UTC))) == 0


def test_a_time_off_the_hour_is_not_an_hour_of_the_chunk():
    with pytest.raises(IncompleteChunkError, match=r"'hanoi': open-meteo sent 1 time that is not an hour of the chunk "
                                                   r"\(2024-03-01T05:30Z\); nothing was written$"):
        check([full(MARCH_2.append(pd.DatetimeIndex(["2024-03-01T05:30"], tz="UTC")))])
