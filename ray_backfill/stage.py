"""`ray-backfill stage bronze|silver|gold --start-date … --end-date …`: one stage over a range, alone.

Inputs are validated before a session starts; the tables are created if missing, then the stage
runs over the whole range in one fresh session, torn down (JVM included) however the stage ends.
No Ray cluster, no ledger: a tool for a developer or an operator repairing one stage.
"""

from __future__ import annotations

import argparse

from jobs.context import load_inputs
from jobs.dates import DateRange
from jobs.tasks import DATA_STAGES, Task, run_task, warm_session
from ray_backfill.ledger import new_run_id
from ray_backfill.options import add_options, resolve
from ray_backfill.sessions import ensure_warehouse, spark_session


def add_stage_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The `stage` subcommand's flags."""
    parser = sub.add_parser("stage", help="run one stage over a date range in one fresh Spark session",
                            description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=DATA_STAGES, help="the stage to run")
    parser.add_argument("--start-date", required=True, help="first UTC day, YYYY-MM-DD")
    parser.add_argument("--end-date", required=True, help="last UTC day, YYYY-MM-DD (inclusive)")
    parser.add_argument("--run-id", default=None, help="id recorded in _run_id (default: new)")
    add_options(parser)
    return parser


def run_stage(args: argparse.Namespace) -> str:
    """Run `args.stage` over the range; returns the one line that says what it wrote."""
    settings, _ = resolve(args)
    chunk = DateRange.parse(args.start_date, args.end_date).as_chunk
    inputs = load_inputs(settings.pipeline)
    ensure_warehouse(settings.catalog)
    run_id = args.run_id or new_run_id()
    with spark_session(settings, f"{args.stage}-{chunk.chunk_id}") as spark:
        session = warm_session(spark)
        run_task(Task("prepare", "prepare", chunk, 1, run_id), settings, inputs, session)
        outcome = run_task(Task(args.stage, args.stage, chunk, 1, run_id), settings, inputs, session)
    counts = ", ".join(f"{table} {n:,} rows" for table, n in outcome.tables.items())
    return f"{args.stage} {chunk.start}..{chunk.last_day} run {run_id}: {counts}"
