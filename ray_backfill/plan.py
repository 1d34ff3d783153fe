"""The backfill plan as pure data: a requested range split into calendar chunks."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from jobs.dates import Chunk, DateRange, month_end
from jobs.errors import DateRangeError

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
