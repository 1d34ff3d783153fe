"""`ray-backfill`: plan and run backfills of the air-quality lakehouse.

A thin shell: parse flags, build Settings, call one library function, and turn the project's
errors into one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from ray_backfill.errors import BackfillError
from ray_backfill.options import add_options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ray-backfill", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def with_range(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--start-date", required=True, help="first UTC day, YYYY-MM-DD")
        p.add_argument("--end-date", required=True, help="last UTC day, YYYY-MM-DD (inclusive)")
        p.add_argument("--chunk", default=None, choices=("monthly", "weekly", "daily"), help="chunk size (monthly)")
        add_options(p)
        return p

    plan = with_range(sub.add_parser("plan", help="print the chunks a run would execute"))
    plan.set_defaults(func=_cmd_plan)

    run = with_range(sub.add_parser("run", help="run a backfill: bronze chunks, then silver and gold"))
    run.add_argument("--executor", default=None, choices=("sequential",), help="how chunks run")
    run.add_argument("--skip-bronze", action="store_true", default=None, help="do not run bronze")
    run.add_argument("--skip-silver", action="store_true", default=None, help="do not run silver")
    run.add_argument("--skip-gold", action="store_true", default=None, help="do not run gold")
    run.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    run.set_defaults(func=_cmd_run)
    return parser


def _cmd_plan(args: argparse.Namespace) -> int:
    from ray_backfill.runner import build_request, format_plan

    request = build_request(args)
    print(format_plan(request))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ray_backfill.runner import build_request, format_plan, run_backfill

    request = build_request(args)
    if args.dry_run:
        print(format_plan(request))
        return 0
    report = run_backfill(request, echo=print)
    return 0 if report.ok else 1


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


if __name__ == "__main__":
    sys.exit(main())
