"""The scheduling loop every executor shares: validate, plan, bronze chunks, barrier, silver, gold."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Callable

from jobs.context import StageInputs, load_inputs
from jobs.entry import new_run_id
from ray_backfill.config import Settings
from ray_backfill.options import resolve
from ray_backfill.plan import Chunk, DateRange, plan_chunks
from ray_backfill.sessions import check_writers, ensure_warehouse


@dataclass(frozen=True)
class BackfillRequest:
    """A validated backfill: settings, range, chunks, inputs and which stages run."""

    settings: Settings
    date_range: DateRange
    granularity: str
    chunks: tuple[Chunk, ...]
    inputs: StageInputs
    executor: str = "sequential"
    skip: frozenset[str] = frozenset()
    run_id: str = field(default_factory=new_run_id)


@dataclass
class RunReport:
    """What a run did: per chunk and per stage rows and seconds."""

    run_id: str
    chunks: list[dict] = field(default_factory=list)
    stages: dict[str, dict] = field(default_factory=dict)
    ok: bool = True
    seconds: float = 0.0


def build_request(args: argparse.Namespace) -> BackfillRequest:
    """Validate flags, env and config into a request; raises InputError before anything runs."""
    settings, file_values = resolve(args)
    date_range = DateRange.parse(args.start_date, args.end_date)
    granularity = args.chunk or file_values.get("chunk", "monthly")
    chunks = plan_chunks(date_range, granularity)
    inputs = load_inputs(settings.pipeline)
    skip = frozenset(s for s in ("bronze", "silver", "gold") if getattr(args, f"skip_{s}", None) or file_values.get(f"skip_{s}"))
    executor = getattr(args, "executor", None) or file_values.get("executor", "sequential")
    return BackfillRequest(settings, date_range, granularity, tuple(chunks), inputs, executor, skip)


def format_plan(request: BackfillRequest) -> str:
    """The plan as a reader wants it: chunks, locations, variables."""
    r = request
    lines = [
        f"plan: {r.date_range.start_date} .. {r.date_range.end_date} in {len(r.chunks)} {r.granularity} chunks, "
        f"{len(r.inputs.locations)} locations, {len(r.inputs.variables)} variables, source {r.settings.source.kind}",
    ]
    lines += [f"  {c.chunk_id:<24} {c.start} .. {c.last_day} ({c.days} days)" for c in r.chunks]
    return "\n".join(lines)


def run_backfill(request: BackfillRequest, echo: Callable[[str], None] = print) -> RunReport:
    """Run bronze over every chunk, then (only if all succeeded) silver and gold over the range."""
    from jobs.inspect import format_summaries, summarize
    from ray_backfill.executors.sequential import SequentialExecutor

    settings = request.settings
    ensure_warehouse(settings.catalog)
    check_writers(settings.catalog, 1)
    report = RunReport(request.run_id)
    started = time.monotonic()
    whole = request.date_range.as_chunk
    echo(f"run {request.run_id}: {len(request.chunks)} chunks, executor {request.executor}, "
         f"warehouse {settings.catalog.warehouse_path if settings.catalog.warehouse_is_local else settings.catalog.warehouse}")
    with SequentialExecutor(settings, request.inputs, request.run_id) as executor:
        if "bronze" not in request.skip:
            stage_started = time.monotonic()
            for chunk, rows, seconds in executor.run_bronze(list(request.chunks)):
                report.chunks.append({"chunk": chunk.chunk_id, "rows": sum(rows.values()), "seconds": round(seconds, 2)})
                echo(f"  bronze {chunk.chunk_id}: {sum(rows.values()):,} rows in {seconds:.1f}s")
            report.stages["bronze"] = {"seconds": round(time.monotonic() - stage_started, 2)}
        for stage in ("silver", "gold"):
            if stage in request.skip:
                continue
            rows, seconds = executor.run_stage(stage, whole)
            report.stages[stage] = {"seconds": round(seconds, 2), "rows": rows}
            echo(f"  {stage}: " + ", ".join(f"{t} {n:,}" for t, n in rows.items()) + f" in {seconds:.1f}s")
        summaries = summarize(executor._spark, settings.catalog)
    report.seconds = time.monotonic() - started
    echo(f"done in {report.seconds:.1f}s. Tables in catalog '{settings.catalog.name}' "
         f"({settings.catalog.kind}{', ' + str(settings.catalog.sqlite_file) if settings.catalog.kind == 'sqlite' else ''}):")
    echo(format_summaries(summaries))
    return report
