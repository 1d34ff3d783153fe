"""A run's request: what to run, how, and with which settings, resolved once from flags,
environment and config file (ray_backfill/options.py) and validated before anything runs.

`build_request` makes a new run's; `resume_request` a recorded run's, with only the how-to-run
settings (RESUME_OVERRIDES) taken from now. The request is stored in the run's ledger as its
`to_json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import shlex
from dataclasses import dataclass, field

from jobs.config import Settings, settings_from_dict, settings_to_dict
from jobs.dates import Chunk, DateRange
from jobs.errors import ConfigError
from jobs.sources.openmeteo import check_dates
from jobs.tasks import DATA_STAGES
from ray_backfill.ledger import RunLedger, RunRecord, new_run_id, open_ledger
from ray_backfill.options import EXTRA_FILE_KEYS, one_of, parse_bool, resolve, run_setting
from ray_backfill.plan import GRANULARITIES, Granularity, plan_chunks

EXECUTORS = ("ray", "sequential")
# the run settings `resume` may change: how it runs, not what it writes
RESUME_OVERRIDES = ("parallelism", "standby", "retries", "chunk_timeout", "address")


@dataclass(frozen=True)
class BackfillRequest:
    """A validated backfill: what to run, how, and with which settings."""

    settings: Settings
    date_range: DateRange
    granularity: Granularity = "monthly"
    executor: str = "ray"
    skip: frozenset[str] = frozenset()
    parallelism: int | None = None  # None: derived from the cluster
    # attempts started ahead of their turn beyond the free slots (ray executor); None: derived from the cluster
    standby: int | None = None
    retries: int = 2  # extra attempts per task
    chunk_timeout_s: float | None = None
    address: str | None = None
    maintain: bool = False  # a final task compacts, expires snapshots and removes orphans
    run_id: str = field(default_factory=new_run_id)

    def __post_init__(self) -> None:
        if self.parallelism is not None and self.parallelism < 1:
            raise ConfigError(f"--parallelism {self.parallelism} must be >= 1")
        if self.standby is not None and self.standby < 0:
            raise ConfigError(f"--standby {self.standby} must be >= 0")
        if self.retries < 0:
            raise ConfigError(f"--retries {self.retries} must be >= 0")
        if self.chunk_timeout_s is not None and not (math.isfinite(self.chunk_timeout_s) and self.chunk_timeout_s > 0):
            raise ConfigError(f"--chunk-timeout {self.chunk_timeout_s} must be a finite number of seconds > 0")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"--executor {self.executor!r} is unknown; use {' or '.join(EXECUTORS)}")

    @property
    def chunks(self) -> list[Chunk]:
        return plan_chunks(self.date_range, self.granularity)

    def to_json(self) -> dict:
        return {
            "settings": settings_to_dict(self.settings), "start_date": self.date_range.start_date.isoformat(),
            "end_date": self.date_range.end_date.isoformat(), "granularity": self.granularity,
            "executor": self.executor, "skip": sorted(self.skip), "parallelism": self.parallelism,
            "standby": self.standby, "retries": self.retries, "chunk_timeout_s": self.chunk_timeout_s,
            "address": self.address, "maintain": self.maintain,
        }

    @classmethod
    def from_json(cls, data: dict, run_id: str) -> "BackfillRequest":
        return cls(
            settings=settings_from_dict(data["settings"]),
            date_range=DateRange(dt.date.fromisoformat(data["start_date"]), dt.date.fromisoformat(data["end_date"])),
            granularity=data["granularity"], executor=data["executor"], skip=frozenset(data["skip"]),
            parallelism=data["parallelism"], standby=data.get("standby"), retries=data["retries"],
            chunk_timeout_s=data["chunk_timeout_s"],
            address=data["address"], maintain=data.get("maintain", False), run_id=run_id,
        )


def build_request(args: argparse.Namespace) -> BackfillRequest:
    """Validate flags, env and config file into a request; raises InputError before anything runs."""
    settings, file_values = resolve(args)
    date_range = DateRange.parse(args.start_date, args.end_date)
    if settings.source.kind == "open-meteo":
        check_dates(settings.source.domains, date_range.start_date, date_range.end_date)
    skip = frozenset(s for s in DATA_STAGES if run_setting(args, file_values, f"skip_{s}", False, parse_bool))
    return BackfillRequest(
        settings=settings, date_range=date_range,
        granularity=run_setting(args, file_values, "chunk", "monthly", one_of(*GRANULARITIES)),
        executor=run_setting(args, file_values, "executor", "ray", one_of(*EXECUTORS)), skip=skip,
        maintain=run_setting(args, file_values, "maintain", False, parse_bool),
        **_how(args, file_values, {}),
    )


def _how(args, file_values, current: dict) -> dict:
    """The request's how-to-run fields from flags, env and file, over `current` (a resume's)."""
    fields = {"parallelism": ("parallelism", int), "standby": ("standby", int), "retries": ("retries", int),
              "chunk_timeout_s": ("chunk_timeout", float), "address": ("address", str)}
    defaults = {"parallelism": None, "standby": None, "retries": 2, "chunk_timeout_s": None, "address": None}
    return {key: run_setting(args, file_values, name, current.get(key, defaults[key]), parse)
            for key, (name, parse) in fields.items()}


def resume_request(record: RunRecord, args: argparse.Namespace) -> BackfillRequest:
    """The run's recorded request, with the how-to-run settings given now (flags, env, file) over it."""
    request = BackfillRequest.from_json(record.request, record.run_id)
    _, file_values = resolve(args)
    unknown = sorted(k for k in EXTRA_FILE_KEYS if k in file_values and k not in RESUME_OVERRIDES)
    if unknown:
        raise ConfigError(f"resume keeps what run {record.run_id} writes: {unknown[0]!r} in --config cannot change "
                          f"on resume (only {', '.join(RESUME_OVERRIDES)}); start a new run instead")
    current = {key: getattr(request, key) for key in ("parallelism", "standby", "retries", "chunk_timeout_s",
                                                        "address")}
    return dataclasses.replace(request, **_how(args, file_values, current))


def ledger_for_args(args: argparse.Namespace) -> RunLedger:
    """The ledger `status` and `resume` read, found from flags, env and --config as `run` finds it."""
    settings, _ = resolve(args)
    return open_ledger(settings.catalog)


def resume_command(request: BackfillRequest) -> str:
    """The command that resumes the run from any directory: it always names the warehouse."""
    parts = ["ray-backfill", "resume", request.run_id, "--warehouse", str(request.settings.catalog.warehouse)]
    if request.settings.catalog.ledger_dir:
        parts += ["--ledger-dir", request.settings.catalog.ledger_dir]
    return shlex.join(parts)
