"""Parallel chunks on Ray share one source limiter: the fake Open-Meteo server, with the free
tier's one-request-in-flight rule, never sees two requests at once from a parallel run."""

from __future__ import annotations

import json

import pytest

from jobs.config import DATA_DIR
from jobs.inputs import load_locations
from jobs.sources.fake_server import FakeOpenMeteoServer
from tests.helpers import java_and_workers, read_ledger, run_cli, run_id_from, wait_gone

pytestmark = [pytest.mark.ray, pytest.mark.spark, pytest.mark.integration, pytest.mark.slow]


def test_parallel_chunks_keep_to_one_request_in_flight_and_a_429_is_retried_not_lost(tmp_path):
    locations = load_locations(DATA_DIR / "locations.jsonl")
    warehouse = tmp_path / "wh"
    before = java_and_workers()
    with FakeOpenMeteoServer(locations=locations, latency_s=0.1, max_in_flight=1, calls_per_minute=600) as server:
        server.inject("429")  # the first request is refused once, as "too many concurrent requests"
        done = run_cli(
            "run", "--start-date", "2024-01-01", "--end-date", "2024-02-29", "--locations", "hanoi,hcmc,danang,hue",
            "--warehouse", str(warehouse), "--catalog-name", "limited", "--parallelism", "2",
            "--spark-mode", "local", "--source", "open-meteo", "--api-url", server.url, "--source-profile", "free",
            "--skip-silver", "--skip-gold",
        )
        stats = server.stats
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "source limiter source-limiter-" in done.stdout and "1 in flight" in done.stdout
    # 2 chunks x 4 locations, one location per request, plus the one retried after the 429
    assert stats.requests == 9 and stats.by_status == {200: 8, 429: 1}
    assert stats.max_in_flight == 1

    run_id = run_id_from(done.stdout)
    ledger = read_ledger(warehouse, run_id)
    bronze = [t for t in ledger["tasks"] if t["stage"] == "bronze"]
    assert all(t["status"] == "succeeded" for t in bronze)
    # every hour of both months for the four cities, each once
    assert sum(t["rows"] for t in bronze) == 4 * 60 * 24
    clients = [t["metrics"]["source_stats"] for t in bronze]
    assert sum(c["requests"] for c in clients) == 9 and sum(c["responses_429"] for c in clients) == 1
    report = json.loads((warehouse / "_ray_backfill" / "runs" / run_id / "report.json").read_text())
    limiter = report["source"]["limiter"]
    assert limiter["leases"] == 9 and limiter["max_in_flight"] == 1 and limiter["in_flight"] == 0
    assert limiter["limits"]["max_in_flight"] == 1
    assert all({"fetch_seconds", "write_seconds", "stop_seconds"} <= set(t["metrics"]) for t in bronze)
    assert not wait_gone(java_and_workers() - before, timeout=30)
