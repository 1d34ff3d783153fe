"""The cutoffs of table maintenance, from the live runs' ledgers, and `ray-backfill maintain`.

A run writes data files before its commit references them, so a file no snapshot references may
be a live run's write in flight, not an orphan. Orphan files are removed only when older than
the earliest start among the live runs on the warehouse (heartbeat fresh: ledger.driver_state) and
the maintaining run's own; snapshots another live run may have pinned stay
(docs/operations.md#table-maintenance).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import re
import tempfile
from pathlib import Path

from jobs.errors import ConfigError
from jobs.maintain import MaintainOptions, maintain
from ray_backfill.browse import load_tables
from ray_backfill.ledger import RunLedger, RunRecord, live_runs, open_ledger
from ray_backfill.options import LEDGER_FLAGS, add_options, resolve
from ray_backfill.sessions import ensure_warehouse, spark_session

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_instant(text: str, flag: str, now: dt.datetime) -> dt.datetime:
    """An ISO timestamp (UTC unless it says otherwise) or a duration before `now` (`90m`, `2h`, `7d`)."""
    match = _DURATION.match(text.strip())
    if match:
        return now - dt.timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is neither an ISO timestamp (2024-05-01T12:00:00Z) nor a duration "
                          "(30m, 2h, 7d)") from None
    value = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if value > now:
        raise ConfigError(f"{flag} {text!r} is in the future")
    return value


def _started(record: RunRecord) -> dt.datetime:
    return dt.datetime.fromisoformat(record.created_at)


def earliest_live_start(ledger: RunLedger, warehouse: str, exclude: str | None = None) -> dt.datetime | None:
    """When the oldest live run on `warehouse` (but `exclude`) started; None when none is live."""
    return min((_started(r) for r in live_runs(ledger, warehouse, exclude)), default=None)


def run_options(ledger: RunLedger, record: RunRecord) -> MaintainOptions:
    """A run's maintain task: orphans older than its own start and every other live run's; the
    snapshots other live runs may read kept; the rest but the last expire when the task runs."""
    warehouse = record.request["settings"]["catalog"]["warehouse"]
    others = earliest_live_start(ledger, warehouse, exclude=record.run_id)
    return MaintainOptions(orphans_before=min(filter(None, (_started(record), others))), live_since=others)


def add_maintain_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("maintain", help="compact small files, expire old snapshots, remove orphan files",
                            description="Iceberg table maintenance of every lakehouse table, in a local Spark "
                                        "session; never touches what a live run may still use")
    parser.add_argument("--dry-run", action="store_true", help="list what it would do; change nothing")
    parser.add_argument("--json", action="store_true", help="the report as JSON")
    parser.add_argument("--older-than", default=None, metavar="WHEN",
                        help="remove only orphan files older than this: ISO timestamp or duration (2h, 7d); "
                             "may only move the cutoff earlier (default: the earliest live run's start, else now)")
    parser.add_argument("--expire-older-than", default=None, metavar="WHEN",
                        help="expire snapshots older than this: ISO timestamp or duration (default: now, so all "
                             "but --retain-last)")
    parser.add_argument("--retain-last", type=int, default=1, help="snapshots kept whatever their age (1)")
    add_options(parser, only=LEDGER_FLAGS)
    return parser


def run_maintain(args: argparse.Namespace) -> str:
    """`ray-backfill maintain`: the report, as text or JSON."""
    settings, _ = resolve(args)
    now = dt.datetime.now(dt.timezone.utc)
    ledger = open_ledger(settings.catalog)
    live = earliest_live_start(ledger, settings.catalog.warehouse)
    cutoffs = [live or now]
    if args.older_than is not None:
        cutoffs.append(parse_instant(args.older_than, "--older-than", now))
    options = MaintainOptions(
        orphans_before=min(cutoffs), live_since=live, retain_last=args.retain_last, dry_run=args.dry_run,
        expire_before=parse_instant(args.expire_older_than, "--expire-older-than", now)
        if args.expire_older_than is not None else now)
    if settings.catalog.kind in ("sqlite", "postgres"):  # a mistyped warehouse or name: one line, nothing created
        load_tables(settings.catalog)
    ensure_warehouse(settings.catalog)
    local = settings.replace(spark=dataclasses.replace(settings.spark, mode="local"))
    # the session's JVM output goes to a log file, as a run's does: next to the run ledgers when local
    logs = ledger.root.parent / "maintain" if isinstance(ledger.root, Path) else Path(tempfile.gettempdir())
    with spark_session(local, "maintain", log_path=logs / f"maintain-{now:%Y%m%dT%H%M%SZ}.log") as spark:
        report = maintain(spark, local.catalog, options)
    return json.dumps(report.to_json(), sort_keys=True) if args.json else report.text()
