"""`ray-backfill`: plan, run, resume and inspect backfills of the air-quality lakehouse.

A thin shell: parse flags, build the request, call one library function, and turn the project's
errors into one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from jobs.context import load_inputs
from jobs.errors import BackfillError
from jobs.tasks import DATA_STAGES
from ray_backfill.executors.base import error_line
from ray_backfill.ledger import driver_state
from ray_backfill.options import LEDGER_FLAGS, add_options
from ray_backfill.plan import GRANULARITIES
from ray_backfill.progress import Progress, summary_table
from ray_backfill.runner import (
    EXECUTORS,
    BackfillRequest,
    build_request,
    format_plan,
    ledger_for_args,
    run_backfill,
)
from ray_backfill.stage import add_stage_parser, run_stage


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ray-backfill", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def with_run_flags(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--start-date", required=True, help="first UTC day, YYYY-MM-DD")
        p.add_argument("--end-date", required=True, help="last UTC day, YYYY-MM-DD (inclusive)")
        p.add_argument("--chunk", default=None, choices=GRANULARITIES, help="chunk size (monthly)")
        p.add_argument("--executor", default=None, choices=EXECUTORS,
                       help="ray (default): chunks in parallel, fresh session each; sequential: the old baseline")
        p.add_argument("--parallelism", type=int, default=None, help="chunks in flight (default: from the cluster)")
        p.add_argument("--standby", type=int, default=None,
                       help="chunks started ahead of their turn beyond the free slots (default: 1 per slot "
                            "where the cluster has idle CPUs, else 0); 0: none ahead, not even in free slots")
        p.add_argument("--retries", type=int, default=None, help="extra attempts per chunk (default 2)")
        p.add_argument("--chunk-timeout", type=float, default=None, help="seconds before a chunk attempt is killed")
        p.add_argument("--address", default=None, help="Ray cluster address (default RAY_ADDRESS, else a local one)")
        for stage in DATA_STAGES:
            p.add_argument(f"--skip-{stage}", action="store_true", default=None, help=f"do not run {stage}")
        add_options(p)
        return p

    with_run_flags(sub.add_parser("plan", help="print the chunks and source calls of a run")).set_defaults(func=_cmd_plan)
    run = with_run_flags(sub.add_parser("run", help="run a backfill: bronze chunks, barrier, silver, gold"))
    run.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    run.set_defaults(func=_cmd_run)

    resume = sub.add_parser("resume", help="re-run what did not succeed in a run")
    resume.add_argument("run_id")
    add_options(resume, only=LEDGER_FLAGS)  # to find the ledger; the run keeps its recorded settings
    resume.set_defaults(func=_cmd_resume)

    status = sub.add_parser("status", help="show a run's chunks, or the recent runs")
    status.add_argument("run_id", nargs="?")
    add_options(status, only=LEDGER_FLAGS)
    status.set_defaults(func=_cmd_status)

    add_stage_parser(sub).set_defaults(func=_cmd_stage)
    return parser


def _cmd_plan(args: argparse.Namespace) -> int:
    request = build_request(args)
    print(format_plan(request, load_inputs(request.settings.pipeline)))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    request = build_request(args)
    if args.dry_run:
        print(format_plan(request, load_inputs(request.settings.pipeline)))
        return 0
    record = run_backfill(request)
    return 0 if record.outcome == "succeeded" else 1


def _cmd_resume(args: argparse.Namespace) -> int:
    ledger = ledger_for_args(args)
    record = ledger.load(args.run_id)
    request = BackfillRequest.from_json(record.request, record.run_id)
    done = sum(t.status.value == "succeeded" for t in record.tasks)
    print(f"resuming run {record.run_id}: {done}/{len(record.tasks)} tasks already succeeded")
    record = run_backfill(request, record, ledger=ledger)
    return 0 if record.outcome == "succeeded" else 1


def _cmd_status(args: argparse.Namespace) -> int:
    ledger = ledger_for_args(args)
    if args.run_id is not None:
        record = ledger.load(args.run_id)
        print(f"run {record.run_id}: {driver_state(record)[1]}, "
              f"started {record.created_at}, finished {record.finished_at or '-'}")
        if record.error:
            print(f"  {record.error}")
        print(Progress.bar(record))
        print(summary_table(record))
        return 0
    ids = ledger.run_ids()
    if not ids:
        print(f"no runs recorded under {ledger.root}")
        return 0
    for run_id in ids[-20:]:
        try:
            record = ledger.load(run_id)
        except BackfillError as exc:  # one broken ledger does not hide the others
            print(f"{run_id}  unreadable   {exc}")
            continue
        req = record.request
        shown = record.outcome or {"running": "running", "lost": "driver lost"}[driver_state(record)[0]]
        print(f"{run_id}  {shown:<11} {req.get('start_date')} .. {req.get('end_date')}  "
              f"{req.get('executor', '-'):<10} {Progress.bar(record, width=10)}")
    return 0


def _cmd_stage(args: argparse.Namespace) -> int:
    print(run_stage(args))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except BackfillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an outside failure: the trace for a report, then one line
        logging.getLogger("ray_backfill").debug("unexpected error", exc_info=True)
        import traceback

        traceback.print_exc(file=sys.stderr)
        print(f"error: {error_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
