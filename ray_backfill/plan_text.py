"""What `plan` (and `run --dry-run`) prints about a run before it starts: its chunks, the source
calls they make and their time at the source's limits, and the run's estimated wall time and
disk (ray_backfill/estimate.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from jobs.config import SourceConfig
from jobs.context import StageInputs
from jobs.dates import Chunk
from jobs.limits import estimate_seconds
from jobs.sources.openmeteo import request_weight
from jobs.tasks import DATA_STAGES
from ray_backfill import estimate
from ray_backfill.request import BackfillRequest


@dataclass(frozen=True)
class _Machine:
    """Where the estimate assumes the run goes: the mode, attempts in flight and cores."""

    mode: str
    parallelism: int
    cores: int
    cores_text: str


def _machine(request: BackfillRequest) -> _Machine:
    mode = estimate.mode_of(request.executor, request.settings.spark.mode)
    cores = os.cpu_count() or 1
    cluster = request.address or os.environ.get("RAY_ADDRESS")
    parallelism = estimate.default_parallelism(mode, cores, request.settings.spark.executor_cores,
                                               None if cluster else request.parallelism)
    cores_text = "this machine's"
    if cluster and request.executor == "ray":  # a cluster's CPUs are not asked for before the run
        parallelism = request.parallelism or parallelism
        cores = max(cores, parallelism * request.settings.spark.executor_cores)
        cores_text = f"assumed for {cluster}: --parallelism x executor cores, at least this machine's"
    return _Machine(mode, parallelism, cores, cores_text)


def _floor_of(source: SourceConfig, weights: list[float], parallelism: int) -> Callable[[str], float]:
    """The limiter model's shortest ingestion for a mode, at the requests in flight the mode keeps."""
    floors: dict[int, float] = {}

    def floor(of_mode: str) -> float:
        if source.kind != "open-meteo":
            return 0.0
        concurrency = estimate.source_concurrency(of_mode, parallelism, source.request_concurrency)
        if concurrency not in floors:
            floors[concurrency] = estimate_seconds(weights, source.limits, concurrency=concurrency)
        return floors[concurrency]

    return floor


def _estimate_lines(request: BackfillRequest, chunks: list[Chunk], nloc: int, batches: list[int],
                    machine: _Machine, floor: Callable[[str], float]) -> list[str]:
    """The run's estimated wall time and disk, and the sequential baseline's when it is faster."""
    source = request.settings.source
    try:
        costs = estimate.load_costs()
    except (OSError, ValueError) as exc:
        return [f"estimate: not available ({exc})"]
    work = estimate.Work(chunk_rows=[nloc * c.days * 24 for c in chunks],
                         chunk_requests=[len(batches)] * len(chunks) if source.kind == "open-meteo" else [],
                         latency_s=source.limits.latency_s if source.kind == "open-meteo" else 0.0,
                         request_concurrency=source.request_concurrency,
                         stages=frozenset(s for s in DATA_STAGES if s not in request.skip),
                         daily=request.granularity == "daily")
    chosen = estimate.estimate(costs, machine.mode, work, parallelism=machine.parallelism, cores=machine.cores,
                               source_s=floor(machine.mode))
    baseline = estimate.estimate(costs, estimate.BASELINE, work, parallelism=1, cores=machine.cores,
                                 source_s=floor(estimate.BASELINE))
    return estimate.estimate_lines(costs, chosen, baseline, work, machine.cores_text)


def format_plan(request: BackfillRequest, inputs: StageInputs) -> str:
    """The plan: chunks, locations, the source calls it will make and their time at the source's limits,
    the run's estimated wall time and disk (ray_backfill/estimate.py), and a warning when the sequential
    baseline is estimated faster."""
    chunks = request.chunks
    source = request.settings.source
    nvars = len(inputs.variables)
    nloc = len(inputs.locations)
    batches = [min(source.batch_size, nloc - i) for i in range(0, nloc, source.batch_size)]
    weights = [request_weight(n, nvars, c.days) for c in chunks for n in batches]
    stages = [s for s in DATA_STAGES if s not in request.skip] + (["maintain"] if request.maintain else [])
    limits = source.limits
    machine = _machine(request)
    floor = _floor_of(source, weights, machine.parallelism)
    lines = [
        f"plan {request.date_range.start_date} .. {request.date_range.end_date}: {len(chunks)} {request.granularity} "
        f"chunks x {nloc} locations, {nvars} variables, source {source.kind}, stages {'+'.join(stages)}",
        f"source calls: {len(weights)} requests, {sum(weights):,.1f} weighted calls",
    ]
    if source.kind == "open-meteo":
        in_flight = estimate.source_concurrency(machine.mode, machine.parallelism, source.request_concurrency)
        lines.append(f"source profile {source.profile} ({limits.describe()}): ingestion takes at least "
                     f"{floor(machine.mode):,.0f}s at those limits ({limits.latency_s:g}s per request, "
                     f"{min(in_flight, limits.max_in_flight or in_flight)} in flight)")
    lines += _estimate_lines(request, chunks, nloc, batches, machine, floor)
    for c in chunks:
        lines.append(f"  bronze-{c.chunk_id:<24} {c.start} .. {c.last_day}  {c.days:>3} days  "
                     f"{request_weight(1, nvars, c.days) * nloc:>7.1f} calls")
    return "\n".join(lines)
