"""The backfill plan as pure data: date ranges, chunks, and which chunks remain."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable, Literal

from ray_backfill.errors import DateRangeError

Granularity = Literal["monthly", "weekly", "daily"]
GRANULARITIES: tuple[str, ...] = ("monthly", "weekly", "daily")
# Open-Meteo's archive starts here; earlier dates are refused by the API.
EARLIEST_DATE = dt.date(2013, 1, 1)


def parse_date(value: str, what: str) -> dt.date:
    """Parse YYYY-MM-DD or raise DateRangeError naming `what` (e.g. --start-date)."""
    try:
        if len(value) != 10:
            raise ValueError
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise DateRangeError(f"{what} {value!r} is not a date; use YYYY-MM-DD, e.g. 2024-01-31") from None


@dataclass(frozen=True, order=True)
class Chunk:
    """A slice of the backfill: whole UTC days, closed at `start` and open at `end`."""

    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise DateRangeError(f"chunk end {self.end} must be after its start {self.start}")

    @property
    def last_day(self) -> dt.date:
        """The last day inside the chunk (the API's inclusive end date)."""
        return self.end - dt.timedelta(days=1)

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def chunk_id(self) -> str:
        """Stable id: YYYY-MM for a whole or clipped calendar month, else the first and last day."""
        same_month = (self.start.year, self.start.month) == (self.last_day.year, self.last_day.month)
        if same_month and (self.start.day == 1 and _month_end(self.start) == self.end):
            return f"{self.start:%Y-%m}"
        return f"{self.start:%Y-%m-%d}_{self.last_day:%Y-%m-%d}"

    def to_json(self) -> dict:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}

    @classmethod
    def from_json(cls, data: dict) -> "Chunk":
        return cls(dt.date.fromisoformat(data["start"]), dt.date.fromisoformat(data["end"]))


@dataclass(frozen=True)
class DateRange:
    """A requested backfill range of whole UTC days; `end_date` is INCLUSIVE, as on the CLI."""

    start_date: dt.date
    end_date: dt.date

    def __post_init__(self) -> None:
        if self.end_date < self.start_date:
            raise DateRangeError(
                f"--end-date {self.end_date} is before --start-date {self.start_date}; swap them"
            )

    @classmethod
    def parse(cls, start: str, end: str) -> "DateRange":
        return cls(parse_date(start, "--start-date"), parse_date(end, "--end-date"))

    @property
    def as_chunk(self) -> Chunk:
        """The whole range as one half-open chunk."""
        return Chunk(self.start_date, self.end_date + dt.timedelta(days=1))


def _month_end(day: dt.date) -> dt.date:
    """First day of the month after `day`'s month."""
    return dt.date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _next_boundary(day: dt.date, granularity: Granularity) -> dt.date:
    if granularity == "monthly":
        return _month_end(day)
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


def remaining_chunks(chunks: Iterable[Chunk], succeeded: Iterable[str]) -> list[Chunk]:
    """The chunks whose id is not among the succeeded ids, in plan order."""
    done = set(succeeded)
    return [c for c in chunks if c.chunk_id not in done]
