"""`ray-backfill`: plan, run, resume and inspect backfills of the air-quality lakehouse.

A thin shell: parse flags, build the request, call one library function, and turn the project's
errors into one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Sequence

from jobs.context import load_inputs
from jobs.errors import BackfillError, ConfigError
from jobs.tasks import DATA_STAGES
from ray_backfill.browse import FORMATS, format_result, format_tables, run_query, warehouse_tables
from ray_backfill.executors.base import error_line
from ray_backfill.ledger import driver_state, mark_cancelled
from ray_backfill.maintain import add_maintain_parser, run_maintain
from ray_backfill.options import LEDGER_FLAGS, add_options, resolve
from ray_backfill.plan import GRANULARITIES
from ray_backfill.plan_text import format_plan
from ray_backfill.progress import Progress, summary_table
from ray_backfill.request import EXECUTORS, build_request, ledger_for_args, resume_request
from ray_backfill.runner import run_backfill
from ray_backfill.stage import add_stage_parser, run_stage


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (flag, value, accepted values) and a pointer to --help,
    not the whole usage."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message}; see `{self.prog} --help`\n")


LOG_LEVELS = ("debug", "info", "warning", "error")
# The flags that find the catalog, all `tables` and `query` take besides --config (the password: environment).
CATALOG_FLAGS = ("--warehouse", "--catalog", "--catalog-uri", "--catalog-name", "--catalog-user")


def _parser() -> argparse.ArgumentParser:
    def log_flags(p: argparse.ArgumentParser, default=None) -> None:
        # before or after the command: `ray-backfill -v run ...` and `ray-backfill run ... -v`
        p.add_argument("-v", "--verbose", action="count", default=default if default is not None else 0,
                       help="the driver's log: -v info, -vv debug (default: warnings)")
        p.add_argument("--log-level", choices=LOG_LEVELS, default=default, help="the driver's log level")

    # no abbreviations: `resume --chunk daily` must not be taken for `--chunk-timeout`
    parser = _Parser(prog="ray-backfill", description=__doc__.splitlines()[0], allow_abbrev=False)
    log_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_parser = sub.add_parser

    def add_parser(*a, **k):
        p = _add_parser(*a, allow_abbrev=False, **k)
        log_flags(p, default=argparse.SUPPRESS)
        return p

    sub.add_parser = add_parser  # type: ignore[method-assign]

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
        p.add_argument("--maintain", action="store_true", default=None,
                       help="after gold: compact, expire snapshots, remove orphan files (as `maintain`)")
        add_options(p)
        return p

    with_run_flags(sub.add_parser("plan", help="print the chunks and source calls of a run")).set_defaults(func=_cmd_plan)
    run = with_run_flags(sub.add_parser("run", help="run a backfill: bronze chunks, barrier, silver, gold"))
    run.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    run.set_defaults(func=_cmd_run)

    resume = sub.add_parser("resume", help="re-run what did not succeed in a run")
    resume.add_argument("run_id")
    # how it runs may change on resume; what it writes (range, chunks, stages, source, tables) may not
    resume.add_argument("--parallelism", type=int, default=None, help="chunks in flight (default: the run's)")
    resume.add_argument("--standby", type=int, default=None, help="as for run (default: the run's)")
    resume.add_argument("--retries", type=int, default=None, help="extra attempts per chunk (default: the run's)")
    resume.add_argument("--chunk-timeout", type=float, default=None, help="seconds (default: the run's)")
    resume.add_argument("--address", default=None, help="Ray cluster address (default: the run's)")
    add_options(resume, only=LEDGER_FLAGS)  # to find the ledger; the run keeps its recorded settings
    resume.set_defaults(func=_cmd_resume)

    status = sub.add_parser("status", help="show a run's chunks, or the recent runs")
    status.add_argument("run_id", nargs="?")
    status.add_argument("--json", action="store_true", help="the ledger's view as JSON (stable keys)")
    status.add_argument("--watch", action="store_true", help="refresh until the run ends")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes of --watch (2)")
    add_options(status, only=LEDGER_FLAGS)
    status.set_defaults(func=_cmd_status)

    cancel = sub.add_parser("cancel", help="stop a run from any terminal: the same outcome as Ctrl-C")
    cancel.add_argument("run_id")
    cancel.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the run to end (120)")
    add_options(cancel, only=LEDGER_FLAGS)
    cancel.set_defaults(func=_cmd_cancel)

    add_stage_parser(sub).set_defaults(func=_cmd_stage)
    add_maintain_parser(sub).set_defaults(func=_cmd_maintain)

    tables = sub.add_parser("tables", help="what the warehouse holds: rows, first and last hour, snapshots, files")
    tables.add_argument("--json", action="store_true", help="one JSON object per table, in a list")
    add_options(tables, only=CATALOG_FLAGS)
    tables.set_defaults(func=_cmd_tables)

    query = sub.add_parser("query", help="run read-only SQL over the tables in DuckDB, e.g. "
                                         "\"SELECT * FROM gold.fact_city_daily\"")
    query.add_argument("sql", help="one SELECT statement; tables are named <namespace>.<table> or <table>")
    query.add_argument("--format", choices=FORMATS, default="table", help="table (default), csv or json")
    query.add_argument("--limit", type=int, default=100, help="rows shown at most (100; 0: all)")
    add_options(query, only=CATALOG_FLAGS)
    query.set_defaults(func=_cmd_query)
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
    request = resume_request(record, args)
    done = sum(t.status.value == "succeeded" for t in record.tasks)
    print(f"resuming run {record.run_id}: {done}/{len(record.tasks)} tasks already succeeded")
    record = run_backfill(request, record, ledger=ledger)
    return 0 if record.outcome == "succeeded" else 1


def _status_json(record) -> dict:
    state, line = driver_state(record)
    return {**record.to_json(), "state": state, "state_line": line}


def _show_run(record, ledger) -> None:
    print(f"run {record.run_id}: {driver_state(record)[1]}, "
          f"started {record.created_at}, finished {record.finished_at or '-'}")
    if record.error:
        print(f"  {record.error}")
    print(Progress.bar(record))
    print(summary_table(record))
    logs = {t.task_id: t.metrics["log"] for t in record.tasks if t.metrics.get("log")}
    folders = {str(Path(path).parent) for path in logs.values()}
    if len(folders) == 1:
        print(f"logs: {folders.pop()} (one file per attempt: <task>.attempt<N>.log)")
    else:  # on the nodes' own log folders
        for task_id, path in logs.items():
            print(f"  {task_id}: log {path}")
    if record.outcome and ledger.has_report_html(record.run_id):
        print(f"report: {ledger.report_html_path(record.run_id)}")


def _cmd_status(args: argparse.Namespace) -> int:
    if args.interval <= 0 or not math.isfinite(args.interval):
        raise ConfigError(f"--interval {args.interval} must be a finite number of seconds > 0")
    ledger = ledger_for_args(args)
    if args.run_id is not None:
        shown = None
        while True:
            record = ledger.load(args.run_id)
            text = json.dumps(_status_json(record), sort_keys=True) if args.json else None
            if args.json and text != shown:
                print(text, flush=True)
            elif not args.json and record.to_json() != shown:
                _show_run(record, ledger)
                sys.stdout.flush()
            shown = text if args.json else record.to_json()
            if not args.watch or driver_state(record)[0] != "running":
                return 0
            time.sleep(args.interval)
    ids = ledger.run_ids()
    if args.json:
        runs = []
        for run_id in ids:
            try:
                record = ledger.load(run_id)
            except BackfillError as exc:
                runs.append({"run_id": run_id, "state": "unreadable", "error": str(exc)})
                continue
            counts: dict[str, int] = {}
            for task in record.tasks:
                counts[task.status.value] = counts.get(task.status.value, 0) + 1
            runs.append({"run_id": run_id, "state": driver_state(record)[0], "outcome": record.outcome,
                         "start_date": record.request.get("start_date"), "end_date": record.request.get("end_date"),
                         "created_at": record.created_at, "finished_at": record.finished_at, "tasks": counts})
        print(json.dumps({"ledger": str(ledger.root), "runs": runs}, sort_keys=True))
        return 0
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


def _cmd_cancel(args: argparse.Namespace) -> int:
    """Ask the run's driver to stop (it looks every 2 s) and wait for its outcome; a run whose
    driver is lost is recorded as cancelled here."""
    ledger = ledger_for_args(args)
    record = ledger.load(args.run_id)
    state, line = driver_state(record)
    if state == "finished":
        print(f"run {record.run_id} already ended: {record.outcome}")
        return 0
    if state == "lost":
        mark_cancelled(ledger, record, "cancelled while its driver was lost")
        print(f"run {record.run_id}: {line}; recorded as cancelled")
        return 0
    ledger.request_cancel(record.run_id)
    print(f"run {record.run_id}: cancel requested ({line})", flush=True)
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        time.sleep(1)
        record = ledger.load(args.run_id)
        if driver_state(record)[0] != "running":
            print(f"run {record.run_id} {record.outcome or driver_state(record)[1]}")
            return 0 if record.outcome == "cancelled" else 1
    print(f"error: run {record.run_id} still running {args.wait:.0f}s after the cancel request", file=sys.stderr)
    return 1


def _cmd_stage(args: argparse.Namespace) -> int:
    print(run_stage(args))
    return 0


def _cmd_maintain(args: argparse.Namespace) -> int:
    print(run_maintain(args))
    return 0


def _cmd_tables(args: argparse.Namespace) -> int:
    infos = warehouse_tables(resolve(args)[0].catalog)
    print(json.dumps([i.to_json() for i in infos]) if args.json else format_tables(infos))
    return 0


def _cmd_query(args: argparse.Namespace) -> int:
    columns, rows, more = run_query(resolve(args)[0].catalog, args.sql, args.limit)
    print(format_result(columns, rows, args.format))
    if more:
        print(f"(the first {args.limit} rows; --limit N for more, 0 for all)", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = args.log_level or ("debug" if args.verbose > 1 else "info" if args.verbose else "warning")
    logging.basicConfig(level=getattr(logging, level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
