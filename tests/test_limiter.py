"""The run-wide source limiter: windows, leases, the Ray actor, and the client keeping to it."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from jobs.config import DATA_DIR, SourceConfig
from jobs.errors import ConfigError
from jobs.inputs import load_locations
from jobs.limits import (
    MINUTES_KEPT,
    PROFILES,
    LocalThrottle,
    RateLimiter,
    SourceLimits,
    estimate_seconds,
    profile_limits,
)
from jobs.sources import HOURLY_VARIABLES
from jobs.sources.fake_server import FakeOpenMeteoServer
from jobs.sources.openmeteo import OpenMeteoClient, request_weight


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_in_flight_slots_are_leases_given_back_on_release():
    clock = Clock()
    limiter = RateLimiter(SourceLimits(max_in_flight=2), clock=clock)
    a, b = limiter.try_acquire("x", 1), limiter.try_acquire("y", 1)
    assert a.lease_id and b.lease_id
    refused = limiter.try_acquire("z", 1)
    assert refused.lease_id is None and 0 < refused.wait_s <= 0.05
    assert limiter.release(a.lease_id) and not limiter.release(a.lease_id)
    assert limiter.try_acquire("z", 1).lease_id
    assert limiter.stats.max_in_flight == 2


def test_a_lease_nobody_releases_expires():
    clock = Clock()
    limiter = RateLimiter(SourceLimits(max_in_flight=1), lease_ttl_s=30, clock=clock)
    held = limiter.try_acquire("dead-chunk#1", 1)
    clock.sleep(29.9)
    assert limiter.try_acquire("other", 1).lease_id is None
    clock.sleep(0.2)
    assert limiter.try_acquire("other", 1).lease_id is not None
    assert limiter.stats.expired_leases == 1
    assert not limiter.release(held.lease_id)


def test_a_dead_holders_slots_are_freed_at_once_but_its_weight_stays_charged():
    clock = Clock()
    limiter = RateLimiter(SourceLimits(max_in_flight=2, per_minute=10), clock=clock)
    limiter.try_acquire("bronze-2024-01#1", 4)
    limiter.try_acquire("bronze-2024-01#1", 4)
    assert limiter.try_acquire("bronze-2024-02#1", 1).lease_id is None
    assert limiter.release_holder("bronze-2024-01#1") == 2
    assert limiter.try_acquire("bronze-2024-02#1", 2).lease_id is not None  # 8 + 2 = 10 fits
    assert limiter.try_acquire("bronze-2024-02#1", 1).lease_id is None  # the minute is full


def test_the_minute_window_slides_and_says_how_long_to_wait():
    clock = Clock()
    limiter = RateLimiter(SourceLimits(per_minute=600), clock=clock)
    for _ in range(6):
        assert limiter.try_acquire("c", 100).lease_id
        clock.sleep(5)
    refused = limiter.try_acquire("c", 100)
    # the first 100 was charged at t=0 and slides out at t=60; now is t=30
    assert refused.lease_id is None and refused.wait_s == pytest.approx(30.0)
    clock.sleep(refused.wait_s)
    assert limiter.try_acquire("c", 100).lease_id
    assert limiter.stats.weighted_calls == 700


def test_hour_and_day_windows_hold_too():
    clock = Clock()
    limiter = RateLimiter(SourceLimits(per_minute=600, per_hour=1000), clock=clock)
    for _ in range(10):
        clock.sleep(60)
        assert limiter.try_acquire("c", 100).lease_id
    clock.sleep(60)
    refused = limiter.try_acquire("c", 100)
    assert refused.lease_id is None and refused.wait_s == pytest.approx(3600 - 600)


def test_a_request_heavier_than_the_whole_limit_gets_an_empty_window_rather_than_starving():
    clock = Clock()
    limiter = RateLimiter(SourceLimits(per_minute=10), clock=clock)
    assert limiter.try_acquire("c", 25).lease_id
    assert limiter.try_acquire("c", 25).lease_id is None
    clock.sleep(60)
    assert limiter.try_acquire("c", 25).lease_id


@pytest.mark.parametrize("bad", [dict(per_minute=0), dict(per_hour=-1), dict(max_in_flight=0), dict(latency_s=-1)])
def test_bad_limits_are_refused(bad):
    with pytest.raises(ConfigError):
        SourceLimits(**bad)


def test_profiles_and_overrides_come_from_the_source_config():
    assert profile_limits("free") == SourceLimits(per_minute=600, per_hour=5000, per_day=10000, max_in_flight=1)
    cfg = SourceConfig(kind="open-meteo", profile="self-hosted", max_in_flight=3, calls_per_minute=120)
    assert cfg.limits.max_in_flight == 3 and cfg.limits.per_minute == 120
    assert cfg.request_concurrency == 3
    with pytest.raises(ConfigError, match="source profile 'paid' is unknown"):
        SourceConfig(profile="paid")
    assert set(PROFILES) >= {"free", "self-hosted"}


def test_estimate_matches_the_limits_by_hand():
    free = SourceLimits(per_minute=600, max_in_flight=1, latency_s=0.4)
    # 10 requests of 100 calls: six fit in the first minute, the 7th waits for the first to slide out
    # at t=60, the 8th..10th follow each 0.4 s after the previous one ends (their weight slid out too)
    assert estimate_seconds([100] * 10, free) == pytest.approx(60 + 0.4 * 4, abs=0.05)
    # one in flight: 50 light requests take 50 round trips
    assert estimate_seconds([1] * 50, free) == pytest.approx(20.0, abs=0.05)
    self_hosted = SourceLimits(max_in_flight=8, latency_s=0.4)
    assert estimate_seconds([3.8] * 528, self_hosted) == pytest.approx(528 / 8 * 0.4, abs=0.05)


def test_clients_of_several_chunks_sharing_one_limiter_never_hit_the_servers_limits():
    """Three chunks at once against a server with the free tier's shape: one in flight, a
    minutely quota. The limiter makes them queue; the server answers no 429 at all."""
    locations = load_locations(DATA_DIR / "locations.jsonl")[:6]
    day = dt.date(2024, 1, 1)
    weight = request_weight(1, len(HOURLY_VARIABLES), 1)  # 1.7 per location-day
    per_minute = weight * 10  # 10 requests per minute
    limiter = RateLimiter(SourceLimits(per_minute=per_minute, max_in_flight=1))
    with FakeOpenMeteoServer(locations=locations, latency_s=0.05, max_in_flight=1,
                             calls_per_minute=per_minute) as server:
        throttle = LocalThrottle(limiter, holder="test")
        clients = [OpenMeteoClient(base_url=server.url, throttle=throttle, concurrency=2, max_attempts=1)
                   for _ in range(3)]
        results, errors = [], []

        def chunk(client, locs):
            try:
                results.append(client.fetch(locs, day, day, HOURLY_VARIABLES))
            except Exception as exc:  # surfaced by the asserts below
                errors.append(exc)

        threads = [threading.Thread(target=chunk, args=(c, locations[i * 2:i * 2 + 2])) for i, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        stats = server.stats
    assert not errors, errors
    assert sum(len(r) for r in results) == 6
    assert stats.max_in_flight == 1 and stats.by_status == {200: 6}
    assert limiter.stats.leases == 6 and limiter.stats.max_in_flight == 1
    assert limiter.in_flight() == 0


def test_the_minute_quota_is_waited_out_not_hit():
    """Seven requests against a quota of six per minute, on a shared simulated clock: the 7th
    waits a minute in the limiter instead of drawing a 429 from the server."""
    clock = Clock(time.time())
    locations = load_locations(DATA_DIR / "locations.jsonl")[:7]
    day = dt.date(2024, 1, 1)
    weight = request_weight(1, len(HOURLY_VARIABLES), 1)
    limiter = RateLimiter(SourceLimits(per_minute=weight * 6), clock=clock)
    throttle = LocalThrottle(limiter, sleep=clock.sleep)
    with FakeOpenMeteoServer(locations=locations, calls_per_minute=weight * 6, clock=clock) as server:
        with OpenMeteoClient(base_url=server.url, throttle=throttle, max_attempts=1) as client:
            answers = client.fetch(locations, day, day, HOURLY_VARIABLES)
        stats = server.stats
    assert len(answers) == 7 and stats.by_status == {200: 7}
    assert 55 <= throttle.waited_s <= 61


def test_the_limiter_keeps_its_use_per_minute_with_the_429s_its_clients_got():
    """What the run report charts against the limits: calls, 429s and the most in flight per clock minute."""
    clock = Clock(60_000.0)
    locations = load_locations(DATA_DIR / "locations.jsonl")[:3]
    day = dt.date(2024, 1, 1)
    limiter = RateLimiter(SourceLimits(max_in_flight=2), clock=clock)
    throttle = LocalThrottle(limiter, sleep=clock.sleep)
    with FakeOpenMeteoServer(locations=locations, clock=clock) as server:
        server.inject("429-retry-after:61")  # the first request is refused; its retry comes a minute later
        with OpenMeteoClient(base_url=server.url, throttle=throttle, sleep=clock.sleep) as client:
            client.fetch(locations, day, day, HOURLY_VARIABLES)
    weight = request_weight(1, len(HOURLY_VARIABLES), 1)
    assert limiter.snapshot()["per_minute"] == [
        {"minute": 60_000, "requests": 1, "weighted_calls": weight, "responses_429": 1, "max_in_flight": 1},
        {"minute": 60_060, "requests": 3, "weighted_calls": 3 * weight, "responses_429": 0, "max_in_flight": 1}]
    for _ in range(MINUTES_KEPT + 5):  # a day and more: the oldest minutes go
        clock.sleep(60)
        limiter.release(limiter.try_acquire("c", 1).lease_id)
    snapshot = limiter.snapshot()
    assert len(snapshot["per_minute"]) == MINUTES_KEPT and snapshot["per_minute_dropped"] == 7
    assert snapshot["per_minute"][-1]["minute"] == clock.now // 60 * 60


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=1, include_dashboard=False, namespace="rbf-limiter-test", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.ray
def test_the_limiter_actor_wakes_a_waiter_on_release_and_frees_a_killed_processes_slot(ray_local, tmp_path):
    ray = ray_local
    from ray_backfill.limiter import RayThrottle, start_limiter

    actor, name = start_limiter("test-run", SourceLimits(max_in_flight=1), lease_ttl_s=300)
    try:
        first = RayThrottle.connect(name, "rbf-limiter-test", "bronze-2024-01#1")
        lease = first.acquire(1.0)
        got = []
        waiter = threading.Thread(target=lambda: got.append((RayThrottle(actor, "bronze-2024-02#1").acquire(1.0),
                                                             time.monotonic())))
        waiter.start()
        time.sleep(1.0)
        assert not got  # one in flight: the second chunk waits
        released_at = time.monotonic()
        first.release(lease)
        waiter.join(10)
        assert got and got[0][1] - released_at < 0.5  # woken by the release, not by a poll or the ttl
        RayThrottle(actor, "bronze-2024-02#1").release(got[0][0])

        # A chunk process takes the slot and is SIGKILLed while holding it.
        gcs = ray.get_runtime_context().gcs_address
        holder = subprocess.Popen(
            [sys.executable, "-c",
             "import ray, sys, time\n"
             "from ray_backfill.limiter import RayThrottle\n"
             "ray.init(address=sys.argv[1], namespace='rbf-holder', log_to_driver=False)\n"
             "RayThrottle.connect(sys.argv[2], 'rbf-limiter-test', 'bronze-2024-03#1').acquire(1.0)\n"
             "print('holding', flush=True)\n"
             "time.sleep(600)\n", gcs, name],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "RAY_ADDRESS": gcs},
        )
        try:
            assert holder.stdout.readline().strip() == "holding"
        finally:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(10)
            holder.stdout.close()
        assert ray.get(actor.snapshot.remote())["in_flight"] == 1
        # what the executor does when a chunk attempt ends badly
        assert ray.get(actor.release_holder.remote("bronze-2024-03#1")) == 1
        started = time.monotonic()
        RayThrottle(actor, "bronze-2024-04#1").acquire(1.0)
        assert time.monotonic() - started < 1.0
        assert ray.get(actor.snapshot.remote())["released_by_holder"] == 1
    finally:
        ray.kill(actor)


def test_the_queue_clock_counts_only_time_held_up_at_the_limiter_with_no_request_in_flight(tmp_path):
    from ray_backfill.limiter import QueueClock, queued_seconds

    now = [100.0]
    path = tmp_path / "queued.json"
    clock = QueueClock(path, now=lambda: now[0])
    assert queued_seconds(path) == 0.0  # no file yet: nothing queued
    clock.waiting()  # the chunk's first request waits for a lease: held up from 100
    now[0] = 130.0
    assert queued_seconds(path, now=130.0) == 30.0  # still waiting: the supervisor sees it grow
    clock.granted()  # granted at 130: 30 s queued
    clock.waiting()  # a second thread waits while the first request is in flight: not held up
    now[0] = 140.0
    clock.released()  # the request in flight ends at 140: only waiting now, held up again
    now[0] = 150.0
    clock.granted(ok=False)  # the wait ended in an error at 150: 10 s more
    assert clock.seconds == 40.0 and queued_seconds(path, now=999.0) == 40.0
