"""The plan is pure data: chunk edges and ids."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys

import pytest

from jobs.dates import Chunk, DateRange
from jobs.errors import DateRangeError
from ray_backfill import estimate as est
from ray_backfill.plan import plan_chunks
from tests.helpers import ROOT

D = dt.date


def spans(start, end, granularity="monthly"):
    return [(c.start, c.last_day, c.chunk_id) for c in plan_chunks(DateRange.parse(start, end), granularity)]


@pytest.mark.parametrize(
    "start, end, granularity, expected",
    [
        ("2024-01-10", "2024-01-20", "monthly", [(D(2024, 1, 10), D(2024, 1, 20), "2024-01-10_2024-01-20")]),
        ("2024-01-01", "2024-01-01", "monthly", [(D(2024, 1, 1), D(2024, 1, 1), "2024-01-01_2024-01-01")]),
        ("2024-01-01", "2024-01-31", "monthly", [(D(2024, 1, 1), D(2024, 1, 31), "2024-01")]),
        ("2024-02-28", "2024-03-01", "monthly",
         [(D(2024, 2, 28), D(2024, 2, 29), "2024-02-28_2024-02-29"), (D(2024, 3, 1), D(2024, 3, 1), "2024-03-01_2024-03-01")]),
        ("2024-02-01", "2024-02-29", "monthly", [(D(2024, 2, 1), D(2024, 2, 29), "2024-02")]),
        ("2023-02-01", "2023-02-28", "monthly", [(D(2023, 2, 1), D(2023, 2, 28), "2023-02")]),
        ("2024-12-15", "2025-01-10", "monthly",
         [(D(2024, 12, 15), D(2024, 12, 31), "2024-12-15_2024-12-31"), (D(2025, 1, 1), D(2025, 1, 10), "2025-01-01_2025-01-10")]),
        ("2024-01-03", "2024-01-16", "weekly",  # 2024-01-08 and -15 are Mondays
         [(D(2024, 1, 3), D(2024, 1, 7), "2024-01-03_2024-01-07"), (D(2024, 1, 8), D(2024, 1, 14), "2024-01-08_2024-01-14"),
          (D(2024, 1, 15), D(2024, 1, 16), "2024-01-15_2024-01-16")]),
        ("2024-02-28", "2024-03-01", "daily",
         [(D(2024, 2, 28), D(2024, 2, 28), "2024-02-28_2024-02-28"), (D(2024, 2, 29), D(2024, 2, 29), "2024-02-29_2024-02-29"),
          (D(2024, 3, 1), D(2024, 3, 1), "2024-03-01_2024-03-01")]),
    ],
)
def test_plan_edges(start, end, granularity, expected):
    assert spans(start, end, granularity) == expected


def test_old_tools_backfill_is_22_monthly_chunks_covering_every_day_once():
    chunks = plan_chunks(DateRange.parse("2024-01-01", "2025-10-16"))
    assert len(chunks) == 22
    assert chunks[0].chunk_id == "2024-01" and chunks[-1].chunk_id == "2025-10-01_2025-10-16"
    assert all(a.end == b.start for a, b in zip(chunks, chunks[1:]))
    assert sum(c.days for c in chunks) == (D(2025, 10, 16) - D(2024, 1, 1)).days + 1


@pytest.mark.parametrize("start, end, fragment", [
    ("2024-02-01", "2024-01-31", "--end-date 2024-01-31 is before --start-date 2024-02-01"),
    ("2024-02-30", "2024-03-01", "--start-date '2024-02-30' is not a date"),
    ("2024-1-1", "2024-03-01", "--start-date '2024-1-1' is not a date"),
    ("2024-01-01", "tomorrow", "--end-date 'tomorrow' is not a date"),
])
def test_bad_ranges(start, end, fragment):
    with pytest.raises(DateRangeError) as err:
        DateRange.parse(start, end)
    assert fragment in str(err.value)
    assert isinstance(err.value, ValueError)


def test_chunk_is_half_open_and_round_trips():
    chunk = Chunk(D(2024, 1, 1), D(2024, 2, 1))
    assert chunk.days == 31 and chunk.last_day == D(2024, 1, 31)
    assert Chunk.from_json(chunk.to_json()) == chunk
    with pytest.raises(DateRangeError):
        Chunk(D(2024, 1, 2), D(2024, 1, 2))


# --- the estimate: wall time and disk before a run starts (ray_backfill/estimate.py) ------------------

COSTS = est.load_costs()
COSTS_JSON = json.loads(est.COSTS_FILE.read_text())
MONTHLY = 24 * 31 * 24  # a monthly chunk of the 24 locations


def _work(chunks: int, rows_per_chunk: int, **kw) -> est.Work:
    return est.Work(chunk_rows=[rows_per_chunk] * chunks, **kw)


def _total(mode: str, work: est.Work, parallelism: int = 2, cores: int = 2, source_s: float = 0.0) -> float:
    return est.estimate(COSTS, mode, work, parallelism=parallelism, cores=cores, source_s=source_s).total_s


def test_the_costs_file_parses_has_every_mode_and_says_where_it_came_from():
    data = COSTS_JSON
    assert set(data["modes"]) == set(est.MODES) == set(COSTS.modes)
    for mode, costs in COSTS.modes.items():
        assert all(getattr(costs, name) >= 0 for name in est.MODE_FIELDS), mode
        assert costs.run_s > 0 and costs.chunk_cpu_s > 0 and 0 < costs.silver_share < 1, mode
    assert all(b > 0 for b in COSTS.disk.bytes_per_row.values()) and set(COSTS.disk.bytes_per_row) == set(est.LAYERS)
    assert dt.datetime.fromisoformat(data["written_at"]) and data["command"].startswith("python -m ")
    assert "results.json" in data["measured_by"] and data["disk"]["measured"]["bronze_rows"] > 0
    # the model reproduces every measured run it came from within 15%
    assert data["validation"] and data["worst_error"] <= 0.15
    with pytest.raises(ValueError, match="ray/raydp"):
        est.parse_costs({**data, "modes": {m: v for m, v in data["modes"].items() if m != "ray/raydp"}})


def test_the_committed_constants_are_what_the_committed_results_give(tmp_path):
    copy = tmp_path / "costs.json"
    shutil.copy(est.COSTS_FILE, copy)
    written = est.write_costs(ROOT / "benchmarks" / "results", "python -m benchmarks.run", copy,
                              now=dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc))
    assert written["modes"] == COSTS_JSON["modes"]  # `make bench` rewrote the file from these results
    assert est.load_costs(copy).written_at.startswith("2030-01-01") and written["disk"] == COSTS_JSON["disk"]


@pytest.mark.parametrize("mode", est.MODES)
def test_the_estimate_grows_with_chunks_and_rows_and_is_deterministic(mode):
    few, more = _total(mode, _work(3, MONTHLY)), _total(mode, _work(12, MONTHLY))
    assert 0 < few < more
    assert _total(mode, _work(3, MONTHLY)) < _total(mode, _work(3, 10 * MONTHLY))
    assert _total(mode, _work(3, MONTHLY)) == few  # the same plan, the same estimate
    assert _total(mode, _work(12, MONTHLY, stages=frozenset({"bronze"}))) < more  # skipping silver and gold


@pytest.mark.parametrize("mode", est.MODES)
def test_the_estimate_is_never_below_the_source_floor(mode):
    work = _work(6, MONTHLY, chunk_requests=[24] * 6, latency_s=0.4, request_concurrency=1)
    e = est.estimate(COSTS, mode, work, parallelism=2, cores=2, source_s=5000.0)
    assert e.total_s >= 5000.0 and e.source_s == 5000.0
    if mode.startswith("ray/"):
        assert e.bound == "source"


def test_more_parallelism_helps_until_the_cores_run_out():
    work = _work(22, MONTHLY)
    one, two = _total("ray/raydp", work, parallelism=1, cores=8), _total("ray/raydp", work, parallelism=2, cores=8)
    assert two < one
    bound = est.estimate(COSTS, "ray/raydp", work, parallelism=8, cores=2)
    assert bound.bound == "cpu"  # wall >= chunks x CPU-s per chunk / cores
    assert bound.bronze_s == pytest.approx(22 * COSTS.modes["ray/raydp"].chunk_cpu(MONTHLY) / 2)


def _lines(mode: str, work: est.Work, source_s: float = 0.0, baseline_source_s: float = 0.0) -> list[str]:
    chosen = est.estimate(COSTS, mode, work, parallelism=2, cores=2, source_s=source_s)
    base = est.estimate(COSTS, est.BASELINE, work, parallelism=1, cores=2, source_s=baseline_source_s)
    return est.estimate_lines(COSTS, chosen, base, work, "this machine's")


def test_a_one_chunk_raydp_run_warns_that_the_baseline_is_faster():
    lines = _lines("ray/raydp", _work(1, MONTHLY))
    [warning] = [line for line in lines if line.startswith("warning:")]
    assert warning.startswith("warning: at 1 chunk of 17,856 rows the sequential baseline "
                              "(--executor sequential --spark-mode local) is estimated faster: ")
    assert lines[0].startswith("estimate: ") and lines[2].startswith("disk: ")
    assert not [line for line in _lines(est.BASELINE, _work(1, MONTHLY)) if line.startswith("warning:")]


def test_a_long_run_with_many_rows_per_chunk_from_the_api_does_not_warn():
    from jobs.limits import PROFILES, estimate_seconds
    from jobs.sources.openmeteo import request_weight

    limits = PROFILES["self-hosted"]  # 12 monthly chunks of 96 locations, one location per request
    requests = [96] * 12
    weights = [request_weight(1, 17, 31)] * sum(requests)
    work = _work(12, 96 * 31 * 24, chunk_requests=requests, latency_s=limits.latency_s, request_concurrency=8)
    lines = _lines("ray/raydp", work, estimate_seconds(weights, limits, concurrency=16),
                   estimate_seconds(weights, limits, concurrency=1))
    assert not [line for line in lines if line.startswith("warning:")], lines


def test_the_disk_estimate_is_bytes_per_row_per_layer_plus_chunks():
    rows, chunks = 52_416, 3
    full = est.disk_bytes(COSTS, rows, chunks)
    assert full == pytest.approx(COSTS_JSON["disk"]["measured"]["du_bytes"], rel=0.01)  # the warehouse measured
    assert est.disk_bytes(COSTS, rows, chunks, {"bronze"}) < full
    assert est.disk_bytes(COSTS, 2 * rows, chunks) > full


@pytest.mark.process
def test_estimating_imports_nothing_heavy():
    code = ("import sys, ray_backfill.estimate as e; e.load_costs(); "
            "print(sorted(m for m in ('pandas', 'pyspark', 'ray', 'numpy', 'jobs') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_plan_and_dry_run_print_the_estimate_and_the_disk(tmp_path, monkeypatch, capsys):
    from ray_backfill.cli import main

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    args = ["--start-date", "2024-01-01", "--end-date", "2024-01-31", "--warehouse", str(tmp_path / "wh"),
            "--executor", "ray", "--spark-mode", "raydp", "--parallelism", "1"]
    assert main(["plan", *args]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("estimate: ") and " s with --executor ray --spark-mode raydp, parallelism 1 on " in out[2]
    assert out[3].startswith("estimate constants: ray_backfill/costs.json, written ")
    assert out[4].startswith("disk: ") and "for the warehouse: 17,856 rows x " in out[4]
    assert out[5].startswith("warning: at 1 chunk of 17,856 rows the sequential baseline")
    assert main(["run", "--dry-run", *args]) == 0
    assert capsys.readouterr().out.splitlines()[:6] == out[:6]
    assert main(["plan", *args[:6], "--executor", "sequential", "--spark-mode", "local",
                 "--source", "open-meteo", "--source-profile", "self-hosted"]) == 0
    seq = capsys.readouterr().out
    assert "(0.4s per request, 1 in flight)" in seq  # the baseline asks one request at a time
    assert "one chunk at a time" in seq and "warning:" not in seq


def test_a_benchmark_writing_elsewhere_leaves_the_constants_alone(tmp_path, monkeypatch):
    from benchmarks import run

    written = []
    monkeypatch.setattr(est, "write_costs", lambda *a, **k: written.append(a) or {"worst_error": 0, "validation": []})
    run.write_costs_from(tmp_path, "python -m benchmarks.run --out elsewhere")  # the test suite's smoke run
    assert written == []
    run.write_costs_from(run.RESULTS, "python -m benchmarks.run ")  # `make bench`
    assert written == [(run.RESULTS, "python -m benchmarks.run")]


def _soak(chunks: int = 100, exit_code: int = 0) -> dict:
    """A soak's results as benchmarks/soak.py writes them: the first tenth of its daily chunks cost
    10 s in their slot and 8 CPU-s, the rest 12 s and 9 CPU-s."""
    rows = [{"chunk": i + 1, "rows": 72, "chunk_s": 10.0 if i < 10 else 12.0, "gap_s": 1.0,
             "cpu_s": 8.0 if i < 10 else 9.0} for i in range(chunks)]
    return {"started_at": "2026-12-07T17:00:00+00:00", "machine": {"cpus": 2},
            "span": {"parallelism": 2, "locations": "hanoi,hcmc,danang", "bronze_only": False},
            "runs": {"raydp": {"mode": "raydp", "exit_code": exit_code, "rows": rows, "wall_s": 560.0,
                               "warehouse_mb_end": 9.0}}}


def test_a_soak_gives_daily_chunks_their_own_constants_from_its_first_tenth():
    modes = COSTS_JSON["modes"]
    daily = est.derive_daily(_soak(), modes)
    raydp = modes["ray/raydp"]
    assert set(daily) == {"ray/raydp"}  # only what the soak ran
    assert daily["ray/raydp"]["chunk_s"] == pytest.approx(10.0 - raydp["chunk_per_10k_rows_s"] * 72 / 1e4, abs=1e-3)
    assert daily["ray/raydp"]["chunk_cpu_s"] == pytest.approx(8.0 - raydp["chunk_cpu_per_10k_rows_s"] * 72 / 1e4,
                                                              abs=1e-3)
    assert est.derive_daily(_soak(exit_code=1), modes) == {} and est.derive_daily(_soak(chunks=10), modes) == {}
    # the plan of a daily run uses them; a monthly run keeps the mode's own
    data = json.loads(json.dumps(COSTS_JSON))
    data["modes"]["ray/raydp"]["daily"] = daily["ray/raydp"]
    costs = est.parse_costs(data)
    work = est.Work(chunk_rows=[72] * 100)
    daily_work = est.Work(chunk_rows=[72] * 100, daily=True)
    plain = est.estimate(costs, "ray/raydp", work, parallelism=2, cores=2)
    assert plain.cpu_per_chunk_s == pytest.approx(COSTS.modes["ray/raydp"].chunk_cpu(72))
    got = est.estimate(costs, "ray/raydp", daily_work, parallelism=2, cores=2)
    assert got.cpu_per_chunk_s == pytest.approx(8.0, abs=1e-3)
    # and the whole soak checks them: 100 chunks x 10 s in 2 slots, plus the run and silver+gold
    (checked,) = est.soak_validation(_soak(), costs)
    assert checked["soak_run"] == "raydp" and checked["estimated_s"] == pytest.approx(got.total_s, abs=0.1)
    assert checked["error"] == pytest.approx((got.total_s - 560.0) / 560.0, abs=1e-3)


def test_a_soaks_warehouse_gives_the_disk_a_daily_chunk_needs():
    disk = COSTS.disk
    per_row = sum(disk.bytes_per_row.values())
    got = est.daily_bytes_per_chunk(_soak(), disk)
    assert got == round((9.0 * 2**20 - per_row * 72 * 100 - disk.fixed_bytes) / 100)
    data = json.loads(json.dumps(COSTS_JSON))
    data["disk"]["daily_bytes_per_chunk"] = got
    costs = est.parse_costs(data)
    assert est.disk_bytes(costs, 7200, 100, daily=True) == pytest.approx(9.0 * 2**20, rel=1e-4)
    assert est.disk_bytes(costs, 7200, 100) == est.disk_bytes(COSTS, 7200, 100)
