"""Days and date ranges of the lakehouse: whole UTC days, as the source and the tables see them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from jobs.errors import DateRangeError


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
        """Stable id: `YYYY-MM` for exactly one whole calendar month, else `FIRST_LAST` (two days)."""
        if self.start.day == 1 and month_end(self.start) == self.end:
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


def month_end(day: dt.date) -> dt.date:
    """First day of the month after `day`'s month."""
    return dt.date(day.year + day.month // 12, day.month % 12 + 1, 1)
