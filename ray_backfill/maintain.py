"""The cutoffs of table maintenance, from the live runs' ledgers, and `ray-backfill maintain`.

A run writes data files before its commit references them, so a file no snapshot references may
be a live run's write in flight, not an orphan. Orphan files are removed only when older than
the earliest start among the live runs on the warehouse (heartbeat fresh: ledger.driver_state) and
the maintaining run's own; snapshots another live run may have pinned stay
(docs/operations.md#table-maintenance).

During a run, the driver also expires the run's own intermediate bronze snapshots (metadata only,
through pyiceberg: no JVM), so each commit's metadata file does not grow with the number of chunks
(`RunExpiry`, docs/operations.md#long-runs-metadata).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import re
import tempfile
import time
from pathlib import Path
from typing import Iterable, Sequence

from jobs.config import CatalogConfig
from jobs.errors import ConfigError
from jobs.maintain import MaintainOptions, maintain
from jobs.tables import BRONZE, TableSpec
from ray_backfill.browse import load_tables, sqlalchemy_uri
from ray_backfill.ledger import ChunkStatus, RunLedger, RunRecord, TaskRecord, live_runs, open_ledger
from ray_backfill.options import LEDGER_FLAGS, add_options, resolve
from ray_backfill.sessions import ensure_warehouse, spark_session

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
log = logging.getLogger(__name__)


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


# --- in-run snapshot expiry (docs/operations.md#long-runs-metadata) --------------------------------

EXPIRE_EVERY = 20  # bronze commits between two in-run expiries (and one when the phase has none left)
KEEP_LAST = 5  # the newest snapshots always kept, whatever the attempts in flight
# Pins are judged by the driver's clock against commit times from the committing JVM's, which stamps
# a snapshot before its commit lands (a SQLite writer may then wait up to its 120 s busy timeout).
PIN_MARGIN_S = 180.0
PYICEBERG_KINDS = ("sqlite", "postgres")  # the catalogs pyiceberg's SqlCatalog opens


def expirable(lineage: Sequence[tuple[int, int]], in_flight_ms: Iterable[int], *, now_ms: int, run_start_ms: int,
              keep_last: int = KEEP_LAST, margin_ms: int = int(PIN_MARGIN_S * 1000)) -> list[int]:
    """The ids in `lineage` ((snapshot id, commit epoch ms) of main's ancestors, oldest first) that no
    attempt started at `in_flight_ms` can have pinned, the last `keep_last` and pre-run ones excluded."""
    horizon = min([*in_flight_ms, now_ms]) - margin_ms
    # The leading snapshots committed by the horizon: the last of them, or a later one, was current
    # when the oldest attempt began (its range replace pins and validates from that one), so it
    # and all after it stay. A later commit time out of order ends the lead early: more stays.
    settled = next((i for i, (_, ms) in enumerate(lineage) if ms > horizon), len(lineage))
    cut = min(settled - 1, len(lineage) - max(1, keep_last))
    # snapshots from before the run are earlier history: `ray-backfill maintain` decides on those
    return [sid for sid, ms in lineage[:max(cut, 0)] if ms >= run_start_ms]


def main_lineage(table) -> list[tuple[int, int]]:
    """(snapshot id, commit epoch ms) of a pyiceberg table's current snapshot and its ancestors, oldest first."""
    out, snapshot = [], table.current_snapshot()
    while snapshot is not None:
        out.append((snapshot.snapshot_id, snapshot.timestamp_ms))
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return out[::-1]


def expire_run_snapshots(catalog: CatalogConfig, run_start: float, in_flight: Iterable[float], *,
                         spec: TableSpec = BRONZE, now: float | None = None, keep_last: int = KEEP_LAST,
                         margin_s: float = PIN_MARGIN_S) -> int:
    """Expire what `expirable` allows of `spec` (epoch seconds in): snapshot metadata only, no file is
    deleted; how many expired. 0 when pyiceberg cannot open the catalog or the table is not there."""
    if catalog.kind not in PYICEBERG_KINDS or (catalog.kind == "sqlite" and not catalog.sqlite_file.is_file()):
        return 0
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.exceptions import NoSuchTableError

    # as browse.load_tables opens it; per call, so the driver holds no connection between expiries
    iceberg = SqlCatalog(catalog.name, uri=sqlalchemy_uri(catalog), init_catalog_tables="false",
                         warehouse=catalog.warehouse_uri, **dict(catalog.properties))
    try:
        try:
            table = iceberg.load_table((spec.namespace, spec.name))
        except NoSuchTableError:
            return 0
        now = time.time() if now is None else now
        ids = expirable(main_lineage(table), [int(s * 1000) for s in in_flight], now_ms=int(now * 1000),
                        run_start_ms=int(run_start * 1000), keep_last=keep_last, margin_ms=int(margin_s * 1000))
        if ids:  # one commit, applied by the catalog to the table as it is then (concurrent commits kept)
            table.maintenance.expire_snapshots().by_ids(ids).commit()
        return len(ids)
    finally:
        iceberg.close()


def other_runs_attempt_starts(ledger: RunLedger, record: RunRecord) -> list[float]:
    """When the running tasks of the other live runs on the run's warehouse began (epoch s): they may
    write the same table. A task is marked running in the ledger before its attempt starts."""
    warehouse = record.request["settings"]["catalog"]["warehouse"]
    return [dt.datetime.fromisoformat(t.updated_at).timestamp()
            for other in live_runs(ledger, warehouse, record.run_id) for t in other.tasks
            if t.status == ChunkStatus.RUNNING]


class RunExpiry:
    """The driver's in-run expiry of bronze snapshots: every `every` bronze commits and when the
    bronze phase has no attempt left to start or finish; a failure is logged and retried later."""

    def __init__(self, catalog: CatalogConfig, ledger: RunLedger, record: RunRecord, every: int | None = None,
                 **limits) -> None:
        self.catalog, self.ledger, self.record = catalog, ledger, record
        self.every = every or EXPIRE_EVERY
        self.limits = {"keep_last": KEEP_LAST, "margin_s": PIN_MARGIN_S, **limits}  # keep_last, margin_s
        self.run_start = dt.datetime.fromisoformat(record.created_at).timestamp()
        self.pending = 0  # bronze commits since the last expiry
        self.expired = 0
        self.enabled = catalog.kind in PYICEBERG_KINDS
        if not self.enabled:
            log.info("in-run snapshot expiry is off: pyiceberg does not open a %s catalog; `ray-backfill maintain` "
                     "expires the run's snapshots (docs/operations.md#long-runs-metadata)", catalog.kind)

    def after(self, task: TaskRecord, in_flight: Sequence[float], last: bool) -> None:
        """After an attempt ended: `in_flight` are when the attempts still running began (epoch s),
        `last` that the phase has nothing more to run."""
        if not self.enabled or task.stage != "bronze" or task.status != ChunkStatus.SUCCEEDED:
            return
        self.pending += 1
        if self.pending < self.every and not last:
            return
        try:
            starts = [*in_flight, *other_runs_attempt_starts(self.ledger, self.record)]
            expired = expire_run_snapshots(self.catalog, self.run_start, starts, **self.limits)
        except Exception as exc:  # e.g. a concurrent commit won: the next bronze commit tries again
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if self.catalog.password:  # a driver may quote its connection string
                reason = reason.replace(self.catalog.password, "***")
            log.warning("in-run snapshot expiry of %s failed, tried again after the next commit: %s",
                        BRONZE.full_name, reason)
            return
        self.pending, self.expired = 0, self.expired + expired
        log.info("in-run expiry: %d snapshots of %s expired (%d in this run)", expired, BRONZE.full_name,
                 self.expired)
