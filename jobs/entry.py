"""The standalone entrypoint every stage shares: `python -m jobs.<stage> --start-date … --end-date …`.

Inputs are validated before a session starts; the stage then runs over the whole range in its own
fresh session, which is torn down (JVM included) however the stage ends.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import uuid
from typing import Sequence

from ray_backfill.errors import BackfillError

STAGES = ("bronze", "silver", "gold")


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus a random suffix."""
    return f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def stage_parser(stage: str) -> argparse.ArgumentParser:
    from ray_backfill.options import add_options

    parser = argparse.ArgumentParser(
        prog=f"python -m jobs.{stage}",
        description=f"Run the {stage} stage over a date range in one fresh Spark session.",
    )
    parser.add_argument("--start-date", required=True, help="first UTC day, YYYY-MM-DD")
    parser.add_argument("--end-date", required=True, help="last UTC day, YYYY-MM-DD (inclusive)")
    parser.add_argument("--run-id", default=None, help="id recorded in _run_id (default: new)")
    add_options(parser)
    return parser


def run_stage(stage: str, argv: Sequence[str] | None = None) -> int:
    """Parse, validate, run one stage over the range; print one line of result or of error."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = stage_parser(stage).parse_args(argv)
    try:
        summary = _run(stage, args)
    except BackfillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary)
    return 0


def _run(stage: str, args: argparse.Namespace) -> str:
    from jobs import stages
    from jobs.context import load_inputs
    from jobs.tables import ensure_tables
    from ray_backfill.options import resolve
    from ray_backfill.plan import DateRange
    from ray_backfill.sessions import ensure_warehouse, spark_session

    settings, _ = resolve(args)
    chunk = DateRange.parse(args.start_date, args.end_date).as_chunk
    inputs = load_inputs(settings.pipeline)
    ensure_warehouse(settings.catalog)
    run_id = args.run_id or new_run_id()
    with spark_session(settings, f"{stage}-{chunk.chunk_id}") as spark:
        ensure_tables(spark, settings.catalog)
        rows = stages.run_stage_range(stage, spark, settings, chunk, inputs, run_id)
    counts = ", ".join(f"{table} {n:,} rows" for table, n in rows.items())
    return f"{stage} {chunk.start}..{chunk.last_day} run {run_id}: {counts}"
