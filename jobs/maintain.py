"""Table maintenance through Iceberg's own Spark actions: compact small files, expire old snapshots,
remove orphan files, and say what each table held before and after.

A backfill commits once per chunk, so its tables end with one snapshot per chunk, and a killed
attempt leaves data files no snapshot references (orphans). The cutoffs come from the caller
(`ray_backfill/maintain.py` derives them from the live runs' ledgers, docs/operations.md#table-maintenance):
this module never decides what is safe to delete, it only never deletes past what it is told.
Identifiers come from the table specs and the catalog config, timestamps from datetimes: nothing
of a user's text is pasted into SQL.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.config import CatalogConfig
from jobs.errors import ConfigError, WarehouseError
from jobs.tables import ALL_TABLES, TableSpec

ICEBERG_EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
# Compact a partition once it holds two small files (Iceberg's default waits for five): a backfill
# rewrites a partition per chunk, so two files in one are already the exception worth fixing.
MIN_INPUT_FILES = 2
MIB = 2**20


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _shown(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def _parse(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _millis(value: dt.datetime) -> int:
    return int(value.timestamp() * 1000)


@dataclass(frozen=True)
class MaintainOptions:
    """What maintenance may touch: every instant is absolute and timezone-aware (UTC)."""

    # orphan files modified at or after this are kept: a live run may still be writing them
    orphans_before: dt.datetime
    # snapshots committed before this expire (None: the moment maintenance runs) ...
    expire_before: dt.datetime | None = None
    # ... but the last `retain_last` always stay ...
    retain_last: int = 1
    # ... and so does every snapshot that was current since another live run started (it may read it)
    live_since: dt.datetime | None = None
    # find and report, change nothing
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.retain_last < 1:
            raise ConfigError(f"--retain-last {self.retain_last} must be >= 1: the current snapshot always stays")

    def to_json(self) -> dict:
        return {"orphans_before": _iso(self.orphans_before), "expire_before": _iso(self.expire_before),
                "retain_last": self.retain_last, "live_since": _iso(self.live_since), "dry_run": self.dry_run}

    @classmethod
    def from_json(cls, data: dict) -> "MaintainOptions":
        return cls(orphans_before=_parse(data["orphans_before"]), expire_before=_parse(data.get("expire_before")),
                   retain_last=int(data.get("retain_last", 1)), live_since=_parse(data.get("live_since")),
                   dry_run=bool(data.get("dry_run", False)))


@dataclass
class TableMaintenance:
    """One table before and after. In a dry run `after` equals `before` and the counts are what
    would be compacted, expired and removed."""

    table: str
    data_files_before: int = 0
    data_files_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    snapshots_before: int = 0
    snapshots_after: int = 0
    compacted_files: int = 0  # data files rewritten (dry run: files in partitions that would be)
    snapshots_expired: int = 0
    orphan_files: int = 0
    orphan_bytes: int = 0
    orphans: list[str] = field(default_factory=list)  # their paths


_SUMMED = ("data_files_before", "data_files_after", "bytes_before", "bytes_after", "snapshots_before",
           "snapshots_after", "compacted_files", "snapshots_expired", "orphan_files", "orphan_bytes")


@dataclass
class MaintainReport:
    """Every table's maintenance, the cutoffs used, and the totals."""

    tables: list[TableMaintenance]
    options: MaintainOptions
    expire_before: dt.datetime  # the moment snapshots were expired before (before the live-run bound)

    @property
    def total(self) -> TableMaintenance:
        return TableMaintenance("total", **{k: sum(getattr(t, k) for t in self.tables) for k in _SUMMED})

    def to_json(self) -> dict:
        return {"options": self.options.to_json(), "expire_before": _iso(self.expire_before),
                "tables": [dataclasses.asdict(t) for t in self.tables], "total": dataclasses.asdict(self.total)}

    @classmethod
    def from_json(cls, data: dict) -> "MaintainReport":
        return cls([TableMaintenance(**t) for t in data["tables"]], MaintainOptions.from_json(data["options"]),
                   _parse(data["expire_before"]))

    def line(self) -> str:
        """One line: `maintain: 96 → 9 data files, 41.2 → 38.0 MiB; 3 orphan files (1.1 MiB) removed; …`."""
        t = self.total
        if self.options.dry_run:
            return (f"maintain (dry run): {t.data_files_before} data files ({t.bytes_before / MIB:.1f} MiB), "
                    f"{t.compacted_files} to compact; {t.orphan_files} orphan files ({t.orphan_bytes / MIB:.1f} MiB) "
                    f"to remove; {t.snapshots_expired} snapshots to expire")
        return (f"maintain: {t.data_files_before} → {t.data_files_after} data files, {t.bytes_before / MIB:.1f} → "
                f"{t.bytes_after / MIB:.1f} MiB; {t.orphan_files} orphan files ({t.orphan_bytes / MIB:.1f} MiB) "
                f"removed; {t.snapshots_expired} snapshots expired")

    def text(self) -> str:
        """A table per lakehouse table, the cutoffs, and the line; dry runs list the orphans."""
        width = max(len(t.table) for t in [*self.tables, self.total])
        head = (f"{'table':<{width}}  {'data files':>12}  {'MiB':>13}  {'snapshots':>10}  "
                f"{'compacted':>9}  {'expired':>7}  {'orphans':>7}")
        lines = [("dry run, nothing changed: " if self.options.dry_run else "")
                 + f"orphan files older than {_shown(self.options.orphans_before)}; snapshots older than "
                 f"{_shown(self.expire_before)} expire, the last {self.options.retain_last} kept"
                 + (f", and every one current since {_shown(self.options.live_since)} (a live run)"
                    if self.options.live_since else ""), head]
        for t in [*self.tables, self.total]:
            lines.append(f"{t.table:<{width}}  {f'{t.data_files_before} → {t.data_files_after}':>12}  "
                         f"{f'{t.bytes_before / MIB:.1f} → {t.bytes_after / MIB:.1f}':>13}  "
                         f"{f'{t.snapshots_before} → {t.snapshots_after}':>10}  {t.compacted_files:>9}  "
                         f"{t.snapshots_expired:>7}  {t.orphan_files:>7}")
        if self.options.dry_run:
            lines += [f"  orphan: {path}" for t in self.tables for path in t.orphans]
        lines.append(self.line())
        return "\n".join(lines)


def check_extensions(spark: SparkSession) -> None:
    """Iceberg's CALL procedures exist only in a session started with its SQL extensions."""
    extensions = spark.conf.get("spark.sql.extensions", None) or ""
    if ICEBERG_EXTENSIONS not in [e.strip() for e in extensions.split(",")]:
        raise ConfigError(f"table maintenance needs a Spark session with spark.sql.extensions={ICEBERG_EXTENSIONS} "
                          f"(this one has {extensions or 'none'}); build it with ray_backfill.sessions")


def maintain(spark: SparkSession, catalog: CatalogConfig, options: MaintainOptions,
             tables: tuple[TableSpec, ...] = ALL_TABLES) -> MaintainReport:
    """Compact, expire, then remove orphans, table by table (docs/operations.md#table-maintenance);
    tables not created yet are left out."""
    check_extensions(spark)
    tables = tuple(t for t in tables if spark.catalog.tableExists(t.qualified(catalog)))
    if not tables:
        raise WarehouseError(f"catalog {catalog.name!r} on warehouse {catalog.warehouse} holds no lakehouse table "
                             "to maintain; check --warehouse and the catalog settings (RAY_BACKFILL_CATALOG_NAME)")
    expire_before = options.expire_before or dt.datetime.now(dt.timezone.utc)
    return MaintainReport([_maintain_table(spark, catalog, spec, options, expire_before) for spec in tables],
                          options, expire_before)


def _timestamp(value: dt.datetime) -> str:
    """A SQL TIMESTAMP literal of an aware datetime; the session's time zone is UTC (jobs/context)."""
    return f"TIMESTAMP '{value.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M:%S.%f}'"


def _data_files(spark: SparkSession, name: str) -> tuple[int, int]:
    row = spark.table(f"{name}.data_files").agg(
        F.count(F.lit(1)), F.coalesce(F.sum("file_size_in_bytes"), F.lit(0))).first()
    return int(row[0]), int(row[1])


def _snapshots(spark: SparkSession, name: str) -> list[tuple[int, int]]:
    """(commit time in epoch ms, snapshot id) of every snapshot, newest first."""
    rows = spark.table(f"{name}.snapshots").select(F.unix_millis("committed_at"), "snapshot_id").collect()
    return sorted(((int(r[0]), int(r[1])) for r in rows), reverse=True)


def _compaction_candidates(spark: SparkSession, name: str) -> int:
    """Data files in partitions holding at least MIN_INPUT_FILES of them: what a compaction rewrites."""
    files = spark.table(f"{name}.data_files")
    groups = files.groupBy("partition") if "partition" in files.columns else files.groupBy()
    counts = groups.count().where(F.col("count") >= MIN_INPUT_FILES).agg(F.sum("count")).first()[0]
    return int(counts or 0)


def _expire_bound(snapshots: list[tuple[int, int]], expire_before: dt.datetime, live_since: dt.datetime | None) -> int:
    """Epoch ms before which snapshots may expire: `expire_before`, but never past the snapshot
    that was current when another live run started (its range replace may have pinned it)."""
    bound = _millis(expire_before)
    if live_since is not None:
        at_start = [ms for ms, _ in snapshots if ms <= _millis(live_since)]
        bound = min(bound, max(at_start) if at_start else _millis(live_since))
    return bound


def _maintain_table(spark: SparkSession, catalog: CatalogConfig, spec: TableSpec, options: MaintainOptions,
                    expire_before: dt.datetime) -> TableMaintenance:
    name = spec.qualified(catalog)  # validated identifiers
    arg = f"{spec.namespace}.{spec.name}"
    out = TableMaintenance(spec.full_name)
    out.data_files_before, out.bytes_before = _data_files(spark, name)
    snapshots = _snapshots(spark, name)
    out.snapshots_before = len(snapshots)
    if options.dry_run:
        out.compacted_files = _compaction_candidates(spark, name)
        bound = _expire_bound(snapshots, expire_before, options.live_since)
        out.snapshots_expired = sum(1 for ms, _ in snapshots[options.retain_last:] if ms < bound)
    else:  # each procedure only where it can have work: every Spark job counts in a short task
        if out.data_files_before >= MIN_INPUT_FILES:
            rewrite = spark.sql(f"CALL {catalog.name}.system.rewrite_data_files(table => '{arg}', "
                                f"options => map('min-input-files', '{MIN_INPUT_FILES}'))").first()
            out.compacted_files = int(rewrite["rewritten_data_files_count"])
            if out.compacted_files:  # the compaction's own snapshot is one more (none when it rewrote nothing)
                snapshots = _snapshots(spark, name)
        if len(snapshots) > options.retain_last:
            bound = _expire_bound(snapshots, expire_before, options.live_since)
            spark.sql(f"CALL {catalog.name}.system.expire_snapshots(table => '{arg}', "
                      f"older_than => {_timestamp(dt.datetime.fromtimestamp(bound / 1000, dt.timezone.utc))}, "
                      f"retain_last => {int(options.retain_last)})").collect()
            kept = _snapshots(spark, name)
            out.snapshots_expired = len({sid for _, sid in snapshots} - {sid for _, sid in kept})
            snapshots = kept
    out.orphans, out.orphan_bytes = _remove_orphans(spark, name, options.orphans_before, options.dry_run)
    out.orphan_files = len(out.orphans)
    out.data_files_after, out.bytes_after = (
        _data_files(spark, name) if out.compacted_files and not options.dry_run else (out.data_files_before,
                                                                                       out.bytes_before))
    out.snapshots_after = len(snapshots)  # the table's snapshots now: read after the last change, not again
    return out


def _remove_orphans(spark: SparkSession, name: str, before: dt.datetime, dry_run: bool) -> tuple[list[str], int]:
    """The table's orphan files modified before `before`, and their bytes; deleted unless `dry_run`.

    Iceberg's `remove_orphan_files` procedure refuses an `older_than` less than 24 hours ago
    (it cannot know what is in flight, and says to use the action instead when the caller does);
    our cutoff is bounded by the live runs' starts, so this runs the same action
    (`SparkActions.deleteOrphanFiles`) itself. The action only finds: its delete function collects
    the paths (a Stream.Builder is a Consumer<String>), so the bytes are measured before the
    files are deleted through the table's own FileIO, and a dry run is the same code minus the delete.
    """
    jvm = spark._jvm
    table = jvm.org.apache.iceberg.spark.Spark3Util.loadIcebergTable(spark._jsparkSession, name)
    found = jvm.java.util.stream.Stream.builder()
    (jvm.org.apache.iceberg.spark.actions.SparkActions.get(spark._jsparkSession)
     .deleteOrphanFiles(table).olderThan(_millis(before)).deleteWith(found).execute())
    paths = sorted(str(p) for p in found.build().toArray())
    io = table.io()
    size = sum(int(io.newInputFile(p).getLength()) for p in paths)
    if paths and not dry_run:
        io.deleteFiles(paths)
    return paths, size
