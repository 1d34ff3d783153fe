"""What a run will cost before it starts: its wall time in the chosen mode, and the disk its warehouse needs.

The model is small on purpose (docs/operations.md#run-estimates). Per mode (executor/spark mode):

    total  = run + bronze + silver_gold
    run    = fixed cost of the run: driver, Ray start, prepare
    silver_gold = sg + sg_row × rows                                   (each share skipped with its stage)
    bronze, Ray executor (p slots, c cores, the source's floor S at p × the chunk's concurrency):
           = max(S + w(last chunk),                                    the source's limits
                 Σ (w(r_i) + fetch_i) / p,                             p slots, one chunk each
                 Σ (k + k_row × r_i) / c)                              the CPU each chunk burns, on c cores
    bronze, sequential executor (one request, one chunk at a time; S at one request in flight):
           = max(S + Σ w(r_i), Σ (k + k_row × r_i) / c)
    w(r)   = chunk + chunk_row × r                                     a chunk's own wall time in its slot

r_i is chunk i's bronze rows (locations × hours), fetch_i its requests ÷ the chunk's concurrency ×
the source's latency. The constants live in ray_backfill/costs.json, measured: `make bench`
(benchmarks/run.py) and `make sweep` (benchmarks/sweep.py) rewrite it from what they measured,
with the date and the command (`derive_costs`, `write_costs`); `python -m ray_backfill.estimate`
does the same from the results already in benchmarks/results/.

Estimating imports nothing but the standard library: `plan` needs no Ray, Spark or pandas for it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shlex
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

COSTS_FILE = Path(__file__).resolve().with_name("costs.json")
FORMAT = 1
MODES = ("sequential/local", "sequential/raydp", "ray/local", "ray/raydp")
BASELINE = "sequential/local"  # the old design: what a mode must beat to be worth its start-up costs
BASELINE_FLAGS = "--executor sequential --spark-mode local"
STAGES = ("bronze", "silver", "gold")
LAYERS = ("bronze", "silver", "gold")  # the warehouse's namespaces, one per stage
MODE_FIELDS = ("run_s", "chunk_s", "chunk_per_10k_rows_s", "chunk_cpu_s", "chunk_cpu_per_10k_rows_s",
               "silver_gold_s", "silver_gold_per_10k_rows_s", "silver_share")
# benchmarks/chunk_cpu.py: the marginal chunk of its 1- and 3-chunk runs (24 locations, 2024-01 .. 2024-03)
# is the mean of February and March 2024: 24 locations × (29 + 31) / 2 days × 24 hours
CHUNK_CPU_ROWS = 24 * 24 * (29 + 31) // 2


def mode_of(executor: str, spark_mode: str) -> str:
    return f"{executor}/{spark_mode}"


def mode_flags(mode: str) -> str:
    executor, spark_mode = mode.split("/")
    return f"--executor {executor} --spark-mode {spark_mode}"


# --- the constants -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DailyCosts:
    """A daily chunk's own constants, where a soak measured them (benchmarks/soak.py): a day's chunk
    shares its month partition with the other days', so it pays for what a month's does not (the
    partition's earlier rows read and written again, commit conflicts with the other slot's days)
    and lacks what a month's rows take; the per-row terms stay the mode's."""

    chunk_s: float
    chunk_cpu_s: float


@dataclass(frozen=True)
class ModeCosts:
    """One mode's constants (seconds; CPU-seconds for the cpu fields; per 10,000 bronze rows where named)."""

    run_s: float  # once per run: driver start, Ray start, prepare
    chunk_s: float  # per bronze chunk, in its slot: session start and stop, commit (not its rows)
    chunk_per_10k_rows_s: float  # per 10k rows of a chunk, in its slot
    chunk_cpu_s: float  # CPU-seconds per chunk, every process of the run together
    chunk_cpu_per_10k_rows_s: float
    silver_gold_s: float  # silver and gold together: sessions, jobs, commits
    silver_gold_per_10k_rows_s: float
    silver_share: float = 0.5  # silver's part of silver + gold (for --skip-silver / --skip-gold)
    daily: DailyCosts | None = None  # daily chunks' own constants, once a soak has measured them

    @classmethod
    def from_json(cls, data: Mapping) -> "ModeCosts":
        daily = data.get("daily")
        return cls(**{name: float(data[name]) for name in MODE_FIELDS},
                   daily=DailyCosts(float(daily["chunk_s"]), float(daily["chunk_cpu_s"])) if daily else None)

    def chunk_wall(self, rows: float, daily: bool = False) -> float:
        base = self.daily.chunk_s if daily and self.daily else self.chunk_s
        return base + self.chunk_per_10k_rows_s * rows / 1e4

    def chunk_cpu(self, rows: float, daily: bool = False) -> float:
        base = self.daily.chunk_cpu_s if daily and self.daily else self.chunk_cpu_s
        return base + self.chunk_cpu_per_10k_rows_s * rows / 1e4


@dataclass(frozen=True)
class DiskCosts:
    """Bytes the warehouse holds: per bronze row in each layer's data files, per chunk, per run."""

    bytes_per_row: Mapping[str, float]  # layer -> bytes of data files per bronze row
    bytes_per_chunk: float  # a bronze commit's metadata and its attempt's log
    fixed_bytes: float  # catalog, the tables' other metadata, the run's ledger
    # a daily chunk's, where a soak measured it: its commit also leaves its month partition's earlier
    # file behind (replaced, kept until `maintain` removes it; docs/operations.md#long-runs-metadata)
    daily_bytes_per_chunk: float | None = None

    @classmethod
    def from_json(cls, data: Mapping) -> "DiskCosts":
        daily = data.get("daily_bytes_per_chunk")
        return cls({layer: float(data["bytes_per_row"][layer]) for layer in LAYERS},
                   float(data["bytes_per_chunk"]), float(data["fixed_bytes"]),
                   float(daily) if daily is not None else None)


@dataclass(frozen=True)
class Costs:
    modes: Mapping[str, ModeCosts]
    disk: DiskCosts
    written_at: str
    command: str
    path: str = ""
    measured_at: str = ""  # when the latest benchmark the constants come from started

    @property
    def provenance(self) -> str:
        """e.g. "ray_backfill/costs.json, written 2026-12-07 by `python -m benchmarks.run` from benchmarks
        of 2026-12-02"."""
        shown = self.path
        try:
            shown = str(Path(self.path).resolve().relative_to(Path(__file__).resolve().parent.parent))
        except ValueError:
            pass
        measured = f" from benchmarks of {self.measured_at[:10]}" if self.measured_at else ""
        return f"{shown}, written {self.written_at[:10]} by `{self.command}`{measured}"


def parse_costs(data: Mapping, path: str = "") -> Costs:
    """The constants of a costs file's JSON; ValueError names what is missing or wrong."""
    if data.get("format") != FORMAT:
        raise ValueError(f"{path or 'costs'}: format {data.get('format')!r}, expected {FORMAT}")
    try:
        modes = {mode: ModeCosts.from_json(data["modes"][mode]) for mode in MODES}
        disk = DiskCosts.from_json(data["disk"])
        measured = [str(v.get("started_at")) for v in (data.get("measured_by") or {}).values()
                    if isinstance(v, Mapping) and v.get("started_at")]
        return Costs(modes, disk, str(data["written_at"]), str(data["command"]), path, max(measured, default=""))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path or 'costs'}: {type(exc).__name__} {exc}") from None


def load_costs(path: Path | str = COSTS_FILE) -> Costs:
    return parse_costs(json.loads(Path(path).read_text()), str(path))


# --- the model -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Work:
    """What a run does, as the model sees it."""

    chunk_rows: Sequence[int]  # bronze rows of each chunk: locations × hours
    chunk_requests: Sequence[int] = ()  # source requests of each chunk (empty: a built-in source)
    latency_s: float = 0.0  # seconds one request takes
    request_concurrency: int = 1  # requests one chunk keeps open (Ray executor; the baseline sends one)
    stages: frozenset[str] = frozenset(STAGES)
    daily: bool = False  # daily chunks: the mode's daily constants where measured

    @property
    def rows(self) -> int:
        return sum(self.chunk_rows)


@dataclass(frozen=True)
class Estimate:
    mode: str
    parallelism: int
    cores: int
    total_s: float
    run_s: float
    bronze_s: float
    silver_gold_s: float
    source_s: float  # the source's floor the estimate had to respect
    bound: str  # what set bronze's time: "source", "slots", "cpu", "one at a time"
    chunks: int
    cpu_per_chunk_s: float  # mean CPU-seconds per chunk


def source_concurrency(mode: str, parallelism: int, request_concurrency: int) -> int:
    """Requests a run keeps open at once: the baseline sends one at a time, the Ray executor one
    chunk's concurrency per slot."""
    return 1 if mode.startswith("sequential/") else max(1, request_concurrency) * max(1, parallelism)


def default_parallelism(mode: str, cores: int, executor_cores: int = 1, requested: int | None = None) -> int:
    """Chunks in flight, as the Ray executor derives them (cores ÷ executor cores; --parallelism at
    most that); the sequential executor runs one."""
    if mode.startswith("sequential/"):
        return 1
    slots = max(1, cores // max(1, executor_cores))
    return min(requested, slots) if requested else slots


def estimate(costs: Costs, mode: str, work: Work, *, parallelism: int, cores: int, source_s: float = 0.0) -> Estimate:
    """The run's wall time in `mode` (the formula at the top of this module). `source_s` is the
    source's floor (jobs.limits.estimate_seconds) at `source_concurrency(...)`: the
    estimate is never below it."""
    m = costs.modes[mode]
    sequential = mode.startswith("sequential/")
    p = 1 if sequential else max(1, parallelism)
    c = max(1, cores)
    rows = work.chunk_rows if "bronze" in work.stages else ()
    source = source_s if rows else 0.0
    bronze, bound = 0.0, "none"
    if rows:
        walls = [m.chunk_wall(r, work.daily) for r in rows]
        cpu = sum(m.chunk_cpu(r, work.daily) for r in rows) / c
        if sequential:  # the source's time and the chunks' take turns in one process
            terms = {"one at a time": source + sum(walls), "cpu": cpu}
        else:
            fetch = sum(math.ceil(n / max(1, work.request_concurrency)) * work.latency_s for n in work.chunk_requests)
            terms = {"source": source + walls[-1] if source else 0.0, "slots": (sum(walls) + fetch) / p, "cpu": cpu}
        bound = max(terms, key=terms.__getitem__)
        bronze = terms[bound]
    shares = {"silver": m.silver_share, "gold": 1 - m.silver_share}
    share = sum(v for stage, v in shares.items() if stage in work.stages)
    silver_gold = share * (m.silver_gold_s + m.silver_gold_per_10k_rows_s * sum(work.chunk_rows) / 1e4)
    total = m.run_s + bronze + silver_gold
    cpu_per_chunk = sum(m.chunk_cpu(r, work.daily) for r in rows) / len(rows) if rows else 0.0
    return Estimate(mode, p, c, max(total, source), m.run_s, bronze, silver_gold, source, bound, len(rows),
                    cpu_per_chunk)


def disk_bytes(costs: Costs, rows: int, chunks: int, stages: Iterable[str] = STAGES, daily: bool = False) -> float:
    """Bytes the warehouse gains from a run: its layers' data files, metadata and the run's ledger."""
    stages = set(stages)
    per_row = sum(b for layer, b in costs.disk.bytes_per_row.items() if layer in stages)
    return per_row * rows + _per_chunk(costs, daily) * (chunks if "bronze" in stages else 0) + costs.disk.fixed_bytes


def _per_chunk(costs: Costs, daily: bool) -> float:
    daily_bytes = costs.disk.daily_bytes_per_chunk
    return daily_bytes if daily and daily_bytes is not None else costs.disk.bytes_per_chunk


def format_seconds(seconds: float) -> str:
    """58 s, 1,234 s (21 min), 9,000 s (2.5 h)."""
    text = f"{seconds:,.0f} s"
    if seconds >= 36000:
        return f"{text} ({seconds / 3600:,.0f} h)"
    if seconds >= 3600:
        return f"{text} ({seconds / 3600:.1f} h)"
    if seconds >= 120:
        return f"{text} ({seconds / 60:.0f} min)"
    return text


def format_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} B"


def _n(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def estimate_lines(costs: Costs, est: Estimate, baseline: Estimate | None, work: Work, cores_text: str) -> list[str]:
    """The plan's lines: the estimate, the disk, and a warning when the baseline would be faster."""
    how = ("one chunk at a time" if est.mode.startswith("sequential/")
           else f"parallelism {est.parallelism} on {_n(est.cores, 'core')} ({cores_text})")
    parts = [f"run {est.run_s:,.0f} s"]
    if est.chunks:
        chunks = _n(est.chunks, "chunk")
        why = {"source": f"the source's floor {est.source_s:,.0f} s + one chunk",
               "slots": f"{chunks} in {_n(est.parallelism, 'slot')}",
               "cpu": f"{chunks} x {est.cpu_per_chunk_s:,.1f} CPU-s / {_n(est.cores, 'core')}",
               "one at a time": (f"source {est.source_s:,.0f} s + {chunks} one after another"
                                 if est.source_s else f"{chunks} one after another")}[est.bound]
        parts.append(f"bronze {est.bronze_s:,.0f} s ({why})")
    if est.silver_gold_s:
        parts.append(f"silver+gold {est.silver_gold_s:,.0f} s")
    lines = [f"estimate: {format_seconds(est.total_s)} with {mode_flags(est.mode)}, {how}: {' + '.join(parts)}",
             f"estimate constants: {costs.provenance}; the model: docs/operations.md#run-estimates"]
    stages = work.stages
    size = disk_bytes(costs, work.rows, len(work.chunk_rows), stages, work.daily)
    per_row = {layer: costs.disk.bytes_per_row[layer] for layer in LAYERS if layer in stages}
    lines.append(f"disk: {format_bytes(size)} for the warehouse: {work.rows:,} rows x "
                 f"{sum(per_row.values()):,.0f} B ({', '.join(f'{k} {v:,.0f}' for k, v in per_row.items())}) + "
                 f"{_n(len(work.chunk_rows) if 'bronze' in stages else 0, 'chunk')} x "
                 f"{format_bytes(_per_chunk(costs, work.daily))} (metadata, logs"
                 f"{', replaced files' if work.daily and costs.disk.daily_bytes_per_chunk is not None else ''}) + "
                 f"{format_bytes(costs.disk.fixed_bytes)} (catalog, tables)")
    if baseline is not None and baseline.mode != est.mode and baseline.total_s < est.total_s:
        rows = f" of {work.rows / len(work.chunk_rows):,.0f} rows" if work.chunk_rows else ""
        what = f"at {_n(len(work.chunk_rows), 'chunk')}{rows}" if est.chunks else "without bronze"
        lines.append(f"warning: {what} the sequential baseline "
                     f"({BASELINE_FLAGS}) is estimated faster: {format_seconds(baseline.total_s)} against "
                     f"{format_seconds(est.total_s)}")
    return lines


# --- the constants from what the benchmarks measured ------------------------------------------------


def _flag(command: str, name: str, default: str | None = None) -> str | None:
    words = shlex.split(command)
    return words[words.index(name) + 1] if name in words else default


@dataclass(frozen=True)
class _Measured:
    """One measured run: its mode and work, and its wall seconds."""

    label: str
    mode: str
    parallelism: int
    cores: int
    chunk_rows: tuple[int, ...]
    chunk_weights: tuple[tuple[float, ...], ...]
    profile: str
    request_concurrency: int
    wall_s: float


def _work_of(start: dt.date, end: dt.date, chunk: str, locations: int, batch: int, variables: int):
    from jobs.dates import DateRange
    from jobs.sources.openmeteo import request_weight
    from ray_backfill.plan import plan_chunks

    chunks = plan_chunks(DateRange(start, end), chunk)
    sizes = [min(batch, locations - i) for i in range(0, locations, batch)]
    return (tuple(locations * c.days * 24 for c in chunks),
            tuple(tuple(request_weight(n, variables, c.days) for n in sizes) for c in chunks))


def _measured_runs(results: Mapping | None, sweep: Mapping | None) -> list[_Measured]:
    from jobs.limits import PROFILES

    out: list[_Measured] = []
    if results:
        w = results["workload"]
        cores = int(results["machine"]["cpus"])
        for profile, block in results["profiles"].items():
            limits = block["limits"]
            for run in block["runs"]:
                rows, weights = _work_of(dt.date.fromisoformat(w["start"]), dt.date.fromisoformat(w["end"]),
                                         "monthly", int(w["locations"]), int(block.get("batch_size", 1)),
                                         int(w["variables"]))
                out.append(_Measured(f"{w['name']} {profile} {run['label']}",
                                     mode_of(run["executor"], run["spark_mode"]), int(run["parallelism"]), cores,
                                     rows, weights, profile, min(8, limits.get("max_in_flight") or 8),
                                     float(run["wall_s"])))
    if sweep:
        cores = int(sweep["machine"]["cpus"])
        for run in sweep["runs"]:
            point, command = run["point"], run["command"]
            profile = _flag(command, "--source-profile", "self-hosted")
            rows, weights = _work_of(dt.date.fromisoformat(point["start"]), dt.date.fromisoformat(point["end"]),
                                     point["chunk"], int(point["locations"]), int(_flag(command, "--batch-size", "1")),
                                     17)
            executor = _flag(command, "--executor", "ray")
            out.append(_Measured(f"sweep {point['label']} {run['mode']}",
                                 mode_of(executor, _flag(command, "--spark-mode", "raydp")),
                                 int(_flag(command, "--parallelism", "1") if executor == "ray" else 1), cores,
                                 rows, weights, profile, min(8, PROFILES[profile].max_in_flight or 8),
                                 float(run["wall_s"])))
    return out


def _estimate_measured(costs: Costs, run: _Measured, *, exclude_silver_gold: bool = False) -> float:
    from jobs.limits import PROFILES, estimate_seconds

    limits = PROFILES[run.profile]
    weights = [w for chunk in run.chunk_weights for w in chunk]
    source = estimate_seconds(weights, limits, concurrency=source_concurrency(run.mode, run.parallelism,
                                                                              run.request_concurrency))
    stages = frozenset({"bronze"}) if exclude_silver_gold else frozenset(STAGES)
    work = Work(run.chunk_rows, tuple(len(c) for c in run.chunk_weights), limits.latency_s,
                run.request_concurrency, stages)
    return estimate(costs, run.mode, work, parallelism=run.parallelism, cores=run.cores, source_s=source).total_s


def _line_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least squares y = a + b x, b >= 0 and a >= 0 (a flat mean where the points cannot tell)."""
    n = len(xs)
    if n == 0:
        return 0.0, 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx > 0 else 0.0
    if b < 0:
        return max(0.0, my), 0.0
    a = my - b * mx
    if a < 0:  # through the origin
        b, a = sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs), 0.0
    return a, b


def _r(x: float, digits: int = 3) -> float:
    return round(float(x), digits)


def derive_costs(results: Mapping | None = None, sweep: Mapping | None = None, chunk_cpu: Mapping | None = None,
                 previous: Mapping | None = None, soak: Mapping | None = None) -> dict:
    """The `modes` section of costs.json (and its validation) from the benchmarks' results.

    - run_s: the RW-22 runs (results.json): wall − (bronze + silver + gold) stage seconds, median.
    - chunk_cpu_s, chunk_cpu_per_10k_rows_s: the sweep's CPU fit (sweep.json; CPU of the run's whole
      process tree); without a sweep, chunk_cpu.json's marginal machine CPU per chunk.
    - chunk_per_10k_rows_s: the CPU per 10k rows (rows are CPU work, one core per slot).
    - chunk_s: chunk_cpu.json's marginal wall of one more chunk (parallelism 1, built-in source)
      less its rows' part. The baseline, one chunk at a time, instead: chunk_s is the sweep's wall
      fit per chunk, and the rest of the marginal wall is its rows'.
    - silver_gold_s, silver_gold_per_10k_rows_s: least squares, over every measured run of the
      mode, of what is left of its wall time after run_s and the model's bronze (silver and gold,
      and what the model misses).
    - silver_share: silver ÷ (silver + gold) in the RW-22 runs, median.
    - daily (soak.json, benchmarks/soak.py): a daily chunk's own chunk_s and chunk_cpu_s, from the
      soak's first tenth of chunks (`derive_daily`); the rest of the soak checks them.
    - sequential/raydp (not measured): the baseline's costs with the fixed cost of a RayDP run.
    Missing inputs keep the previous file's values.
    """
    prev = {mode: dict(v) for mode, v in ((previous or {}).get("modes") or {}).items()}
    modes: dict[str, dict] = {}
    fits = (sweep or {}).get("fits") or {}
    label_mode = {}
    for run in (sweep or {}).get("runs", []):
        command = run["command"]
        label_mode[run["mode"]] = mode_of(_flag(command, "--executor", "ray"), _flag(command, "--spark-mode", "raydp"))
    marginal = {mode_of("ray", "raydp"): "raydp", mode_of("ray", "local"): "local", BASELINE: "sequential"}
    rw22 = [run for block in (results or {}).get("profiles", {}).values() for run in block["runs"]]
    notes: dict[str, list[str]] = {}
    for mode in ("sequential/local", "ray/local", "ray/raydp"):
        m = dict(prev.get(mode, {}))
        why = notes.setdefault(mode, [])
        fit = next((f["cpu"] for label, f in fits.items() if label_mode.get(label) == mode), None)
        cpu_marginal = ((chunk_cpu or {}).get("marginal") or {}).get(marginal[mode])
        if fit:
            m["chunk_cpu_s"], m["chunk_cpu_per_10k_rows_s"] = fit["per_chunk_s"], fit["per_10k_rows_s"]
            why.append("chunk CPU: sweep.json CPU fit")
        elif cpu_marginal:
            m["chunk_cpu_s"] = cpu_marginal["cpu_s"]["machine (/proc/stat)"]
            m["chunk_cpu_per_10k_rows_s"] = 0.0
            why.append("chunk CPU: chunk_cpu.json marginal machine CPU")
        wall_fit = next((f["wall"] for label, f in fits.items() if label_mode.get(label) == mode), None)
        if mode == BASELINE and wall_fit and cpu_marginal:
            # one chunk at a time: the wall fit's cost per chunk is the chunk's own; the rest of
            # one more chunk's wall is its rows'
            m["chunk_s"] = wall_fit["per_chunk_s"]
            m["chunk_per_10k_rows_s"] = max(0.0, cpu_marginal["wall_s"] - m["chunk_s"]) / (CHUNK_CPU_ROWS / 1e4)
            why.append("chunk wall: sweep.json wall fit per chunk, rows: chunk_cpu.json marginal wall less that")
        elif cpu_marginal and "chunk_cpu_per_10k_rows_s" in m:
            # in its slot a chunk's rows are CPU work on one core; the rest of one more chunk's wall
            # (parallelism 1, built-in source) is the chunk's own
            m["chunk_per_10k_rows_s"] = m["chunk_cpu_per_10k_rows_s"]
            m["chunk_s"] = max(0.0, cpu_marginal["wall_s"] - m["chunk_per_10k_rows_s"] * CHUNK_CPU_ROWS / 1e4)
            why.append("chunk wall: chunk_cpu.json marginal wall at parallelism 1 less its rows' CPU")
        runs = [r for r in rw22 if mode_of(r["executor"], r["spark_mode"]) == mode]
        fixed = [r["wall_s"] - sum(r["report"]["stage_seconds"].get(s, 0.0) for s in STAGES) for r in runs]
        silver = [r["report"]["stage_seconds"]["silver"] /
                  (r["report"]["stage_seconds"]["silver"] + r["report"]["stage_seconds"]["gold"]) for r in runs
                  if r["report"]["stage_seconds"].get("silver") and r["report"]["stage_seconds"].get("gold")]
        if fixed:
            m["run_s"] = statistics.median(fixed)
            why.append("run: results.json wall less its stages")
        if silver:
            m["silver_share"] = statistics.median(silver)
        m.setdefault("silver_share", 0.5)
        m.setdefault("silver_gold_s", 0.0)
        m.setdefault("silver_gold_per_10k_rows_s", 0.0)
        modes[mode] = m
    missing = [f"{mode}.{name}" for mode, m in modes.items() for name in MODE_FIELDS if name not in m]
    if missing:
        raise ValueError(f"the results do not give {', '.join(missing)} and no earlier costs file does")
    measured = _measured_runs(results, sweep)
    disk = DiskCosts({layer: 0.0 for layer in LAYERS}, 0.0, 0.0)
    for mode in list(modes):  # silver and gold: what the rest of the model leaves of each run
        runs = [r for r in measured if r.mode == mode]
        if not runs:
            continue
        costs = Costs({k: ModeCosts.from_json(v) for k, v in modes.items()} |
                      {"sequential/raydp": ModeCosts.from_json(modes[BASELINE])}, disk, "", "")
        left = [r.wall_s - _estimate_measured(costs, r, exclude_silver_gold=True) for r in runs]
        a, b = _line_fit([sum(r.chunk_rows) / 1e4 for r in runs], left)
        modes[mode]["silver_gold_s"], modes[mode]["silver_gold_per_10k_rows_s"] = a, b
        notes[mode].append(f"silver+gold: least squares of the rest of {len(runs)} runs")
    raydp = modes["ray/raydp"]
    modes["sequential/raydp"] = dict(modes[BASELINE], run_s=raydp["run_s"])
    notes["sequential/raydp"] = ["not measured: sequential/local with the run cost of ray/raydp "
                                 "(Ray start, a RayDP session)"]
    for mode, m in modes.items():
        modes[mode] = {name: _r(m[name]) for name in MODE_FIELDS} | {"from": "; ".join(notes[mode])}
    daily = derive_daily(soak, modes) if soak else {}
    for mode in modes:
        kept = daily.get(mode) or (prev.get(mode) or {}).get("daily")
        if mode == "sequential/raydp":
            kept = daily.get(BASELINE) or kept
        if kept:
            modes[mode]["daily"] = kept
    costs = Costs({k: ModeCosts.from_json(v) for k, v in modes.items()}, disk, "", "")
    validation = []
    for run in measured:
        est = _estimate_measured(costs, run)
        validation.append({"run": run.label, "mode": run.mode, "parallelism": run.parallelism,
                           "measured_s": run.wall_s, "estimated_s": round(est, 1),
                           "error": round((est - run.wall_s) / run.wall_s, 3)})
    validation += soak_validation(soak, costs) if soak else []
    return {"modes": {mode: modes[mode] for mode in MODES}, "validation": validation}


SOAK_MODES = {"sequential": BASELINE, "local": "ray/local", "raydp": "ray/raydp"}  # benchmarks/soak.py's keys
DAILY_SHARE = 0.1  # the soak's first tenth of chunks gives a daily chunk's constants; the whole run checks them


def _soak_runs(soak: Mapping) -> Iterable[tuple[str, str | None, Mapping, list[Mapping]]]:
    """The soak's runs that ended well and finished chunks: (its key, its mode here or None, the
    run, its chunks with rows)."""
    for key, run in (soak.get("runs") or {}).items():
        chunks = [r for r in run.get("rows") or [] if r.get("rows")]
        if chunks and not run.get("exit_code"):
            yield key, SOAK_MODES.get(run.get("mode", key)), run, chunks


def derive_daily(soak: Mapping, modes: Mapping[str, Mapping]) -> dict[str, dict]:
    """Each soaked mode's daily constants from the soak's first tenth of chunks, medians: CPU-seconds
    per chunk (its share of the run's CPU) and wall seconds (the ledger's chunk seconds in its slot; the
    baseline, one chunk at a time: seconds between completions), less the mode's per-row terms."""
    out = {}
    for _, mode, _, rows in _soak_runs(soak):
        if mode not in modes or len(rows) < 20:
            continue
        first = rows[:max(10, int(len(rows) * DAILY_SHARE))]
        m = modes[mode]
        wall_key = "gap_s" if mode == BASELINE else "chunk_s"
        walls = [r[wall_key] - m["chunk_per_10k_rows_s"] * r["rows"] / 1e4 for r in first if r.get(wall_key)]
        cpus = [r["cpu_s"] - m["chunk_cpu_per_10k_rows_s"] * r["rows"] / 1e4 for r in first if r.get("cpu_s")]
        if walls and cpus:
            out[mode] = {"chunk_s": _r(statistics.median(walls)), "chunk_cpu_s": _r(statistics.median(cpus)),
                         "from": f"soak.json ({soak.get('started_at', '')[:10]}): medians of its first "
                                 f"{len(first)} of {len(rows)} daily chunks, less the mode's per-row terms"}
    return out


def daily_bytes_per_chunk(soak: Mapping, disk: DiskCosts) -> float | None:
    """A daily chunk's bytes in the warehouse beyond its rows' (metadata, its attempt's log, the month
    file it replaced), from the soak's warehouses at their end: the median over its modes."""
    span = soak.get("span") or {}
    layers = ("bronze",) if span.get("bronze_only") else LAYERS
    per_row = sum(disk.bytes_per_row[layer] for layer in layers)
    found = []
    for _, _, run, chunks in _soak_runs(soak):
        end_mb = run.get("warehouse_mb_end")
        if end_mb:
            found.append((end_mb * 2**20 - per_row * sum(r["rows"] for r in chunks) - disk.fixed_bytes) / len(chunks))
    return round(statistics.median(found)) if found else None


def soak_validation(soak: Mapping, costs: Costs) -> list[dict]:
    """The soak's runs against the estimate: the whole run's wall seconds."""
    span = soak.get("span") or {}
    cores = int((soak.get("machine") or {}).get("cpus") or 1)
    out = []
    for key, mode, run, chunks in _soak_runs(soak):
        if mode is None:
            continue
        rows = [r["rows"] for r in chunks]
        stages = frozenset({"bronze"}) if span.get("bronze_only") else frozenset(STAGES)
        parallelism = 1 if mode == BASELINE else int(span.get("parallelism") or 1)
        est = estimate(costs, mode, Work(rows, stages=stages, daily=True), parallelism=parallelism, cores=cores)
        out.append({"run": f"soak {len(rows)} daily, {span.get('locations')} {key}", "soak_run": key, "mode": mode,
                    "parallelism": parallelism, "measured_s": run["wall_s"], "estimated_s": round(est.total_s, 1),
                    "error": round((est.total_s - run["wall_s"]) / run["wall_s"], 3)})
    return out


def measure_disk(warehouse: Path | str) -> dict:
    """The `disk` section from a warehouse one run wrote (its latest report names its rows and chunks):
    bytes of each layer's data files per bronze row; per chunk, the bronze table's metadata and the
    ledger's files per task; the rest (catalog, other metadata, directories) as fixed. Sizes are
    apparent sizes, as `du -sb` counts them."""
    root = Path(warehouse)
    reports = sorted(root.glob("_ray_backfill/runs/*/report.json"))
    if not reports:
        raise ValueError(f"{root}: no run report under _ray_backfill/runs/")
    report = json.loads(reports[-1].read_text())
    tables = {t["table"]: t["rows"] for t in report.get("tables") or []}
    rows = tables.get("bronze.open_meteo_hourly")
    chunks = sum(t["stage"] == "bronze" for t in report["tasks"])
    if not rows or not chunks:
        raise ValueError(f"{reports[-1]}: no bronze rows or chunks")

    def size(paths: Iterable[Path]) -> int:
        return sum(p.lstat().st_size for p in paths)

    total = size([root, *root.rglob("*")])
    data = {layer: size(p for p in (root / layer).glob("*/data/**/*") if p.is_file()) for layer in LAYERS}
    bronze_meta = size(p for p in (root / "bronze").glob("*/metadata/*") if p.is_file())
    ledger = size(p for p in (root / "_ray_backfill").rglob("*") if p.is_file())
    per_chunk = bronze_meta / chunks + ledger / len(report["tasks"])
    fixed = total - sum(data.values()) - per_chunk * chunks
    return {"bytes_per_row": {layer: _r(b / rows, 2) for layer, b in data.items()},
            "bytes_per_chunk": round(per_chunk), "fixed_bytes": round(fixed),
            "measured": {"warehouse": str(root), "du_bytes": total, "bronze_rows": rows, "chunks": chunks,
                         "run_id": report.get("run_id"), "request": {k: report.get("request", {}).get(k) for k in (
                             "start_date", "end_date", "granularity", "executor")},
                         "data_bytes": data, "bronze_metadata_bytes": bronze_meta, "ledger_bytes": ledger,
                         "tables": tables},
            "from": "measure_disk: data files per bronze row per layer; per chunk: bronze metadata ÷ chunks + "
                    "ledger ÷ tasks; fixed: the rest of `du -sb`"}


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def write_costs(results_dir: Path | str, command: str, path: Path | str = COSTS_FILE,
                disk_from: Path | str | None = None, now: dt.datetime | None = None) -> dict:
    """Rewrite the costs file from the results in `results_dir` (results.json, sweep.json,
    chunk_cpu.json, soak/soak.json: whichever are there), keeping what they do not give;
    `disk_from` measures the disk figures again from a warehouse. Returns what was written."""
    results_dir, path = Path(results_dir), Path(path)
    previous = _read(path) or {}
    results, sweep, chunk_cpu = (_read(results_dir / name) for name in ("results.json", "sweep.json", "chunk_cpu.json"))
    soak = _read(results_dir / "soak" / "soak.json")
    derived = derive_costs(results, sweep, chunk_cpu, previous, soak)
    disk = measure_disk(disk_from) if disk_from else previous.get("disk")
    if not disk:
        raise ValueError("no disk figures: give a warehouse a run wrote (--disk-from)")
    daily_disk = daily_bytes_per_chunk(soak, DiskCosts.from_json(disk)) if soak else None
    if daily_disk is not None:
        disk = dict(disk, daily_bytes_per_chunk=daily_disk)
    sources = dict(previous.get("measured_by") or {})
    for name, data in (("results.json", results), ("sweep.json", sweep)):
        if data:
            sources[name] = {"command": data.get("command"), "started_at": data.get("started_at"),
                             "machine": data.get("machine")}
    if chunk_cpu:
        sources["chunk_cpu.json"] = {"command": "python -m benchmarks.chunk_cpu"}
    if soak:
        sources["soak/soak.json"] = {"command": soak.get("command"), "started_at": soak.get("started_at"),
                                     "machine": soak.get("machine")}
    written_at = (now or dt.datetime.now(dt.timezone.utc)).isoformat(timespec="seconds")
    out = {"format": FORMAT, "written_at": written_at, "command": command,
           "about": "The constants of `ray-backfill plan`'s estimate (ray_backfill/estimate.py, "
                    "docs/operations.md#run-estimates): seconds, CPU-seconds, per 10,000 bronze rows where named; "
                    "rewritten by `make bench` and `make sweep` from what they measured.",
           "measured_by": sources, "modes": derived["modes"], "disk": disk,
           "validation": derived["validation"],
           "worst_error": max((abs(v["error"]) for v in derived["validation"]), default=None)}
    parse_costs(out, str(path))  # what is written can be read
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rewrite ray_backfill/costs.json from the benchmarks' results.")
    parser.add_argument("--results", type=Path, default=COSTS_FILE.parent.parent / "benchmarks" / "results",
                        help="the folder of results.json, sweep.json, chunk_cpu.json (benchmarks/results)")
    parser.add_argument("--disk-from", type=Path, default=None,
                        help="a warehouse one run wrote: measure the disk figures from it")
    parser.add_argument("--out", type=Path, default=COSTS_FILE)
    args = parser.parse_args(argv)
    command = "python -m ray_backfill.estimate " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    out = write_costs(args.results, command.strip(), args.out, args.disk_from)
    for v in out["validation"]:
        print(f"{v['run']:58} {v['measured_s']:7.1f} s measured {v['estimated_s']:7.1f} s estimated "
              f"{v['error']:+.0%}")
    print(f"wrote {args.out} (worst error {out['worst_error'] or 0:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
