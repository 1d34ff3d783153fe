"""The backfill plan as pure data: a requested range split into calendar chunks, and the tasks of a
new run (prepare, one per bronze chunk, silver, gold, maintain) as its ledger's first record."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Literal

from jobs.dates import Chunk, DateRange, month_end
from jobs.errors import DateRangeError
from ray_backfill.ledger.state import RunRecord, TaskRecord

if TYPE_CHECKING:
    from ray_backfill.request import BackfillRequest

Granularity = Literal["monthly", "weekly", "daily"]
GRANULARITIES: tuple[Granularity, ...] = ("monthly", "weekly", "daily")


def _next_boundary(day: dt.date, granularity: Granularity) -> dt.date:
    if granularity == "monthly":
        return month_end(day)
    if granularity == "weekly":  # ISO weeks: Monday to Monday
        return day + dt.timedelta(days=7 - day.weekday())
    return day + dt.timedelta(days=1)


def plan_chunks(date_range: DateRange, granularity: Granularity = "monthly") -> list[Chunk]:
    """Split the range on calendar boundaries; the first and last chunk are clipped, not widened."""
    if granularity not in GRANULARITIES:
        raise DateRangeError(f"--chunk {granularity!r} is unknown; use monthly, weekly or daily")
    chunks = []
    stop = date_range.end_date + dt.timedelta(days=1)
    cursor = date_range.start_date
    while cursor < stop:
        end = min(_next_boundary(cursor, granularity), stop)
        chunks.append(Chunk(cursor, end))
        cursor = end
    return chunks


def new_record(request: BackfillRequest) -> RunRecord:
    """The ledger of a new run: prepare, one task per bronze chunk, silver, gold, maintain if asked."""
    whole = request.date_range.as_chunk
    tasks = [TaskRecord("prepare", "prepare", whole.start.isoformat(), whole.end.isoformat())]
    if "bronze" not in request.skip:
        tasks += [TaskRecord(f"bronze-{c.chunk_id}", "bronze", c.start.isoformat(), c.end.isoformat())
                  for c in request.chunks]
    for stage in ("silver", "gold"):
        if stage not in request.skip:
            tasks.append(TaskRecord(stage, stage, whole.start.isoformat(), whole.end.isoformat()))
    if request.maintain:
        tasks.append(TaskRecord("maintain", "maintain", whole.start.isoformat(), whole.end.isoformat()))
    return RunRecord(request.run_id, request.to_json(), tasks)
