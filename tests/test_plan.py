"""The plan is pure data: chunk edges and ids."""

from __future__ import annotations

import datetime as dt

import pytest

from jobs.dates import Chunk, DateRange
from jobs.errors import DateRangeError
from ray_backfill.plan import plan_chunks

D = dt.date


def spans(start, end, granularity="monthly"):
    return [(c.start, c.last_day, c.chunk_id) for c in plan_chunks(DateRange.parse(start, end), granularity)]


@pytest.mark.parametrize(
    "start, end, granularity, expected",
    [
        ("2024-01-10", "2024-01-20", "monthly", [(D(2024, 1, 10), D(2024, 1, 20), "2024-01-10_2024-01-20")]),
        ("2024-01-01", "2024-01-01", "monthly", [(D(2024, 1, 1), D(2024, 1, 1), "2024-01-01_2024-01-01")]),
        ("2024-01-01", "2024-01-31", "monthly", [(D(2024, 1, 1), D(2024, 1, 31), "2024-01")]),
        ("2024-02-28", "2024-03-01", "monthly",
         [(D(2024, 2, 28), D(2024, 2, 29), "2024-02-28_2024-02-29"), (D(2024, 3, 1), D(2024, 3, 1), "2024-03-01_2024-03-01")]),
        ("2024-02-01", "2024-02-29", "monthly", [(D(2024, 2, 1), D(2024, 2, 29), "2024-02")]),
        ("2023-02-01", "2023-02-28", "monthly", [(D(2023, 2, 1), D(2023, 2, 28), "2023-02")]),
        ("2024-12-15", "2025-01-10", "monthly",
         [(D(2024, 12, 15), D(2024, 12, 31), "2024-12-15_2024-12-31"), (D(2025, 1, 1), D(2025, 1, 10), "2025-01-01_2025-01-10")]),
        ("2024-01-03", "2024-01-16", "weekly",  # 2024-01-08 and -15 are Mondays
         [(D(2024, 1, 3), D(2024, 1, 7), "2024-01-03_2024-01-07"), (D(2024, 1, 8), D(2024, 1, 14), "2024-01-08_2024-01-14"),
          (D(2024, 1, 15), D(2024, 1, 16), "2024-01-15_2024-01-16")]),
        ("2024-02-28", "2024-03-01", "daily",
         [(D(2024, 2, 28), D(2024, 2, 28), "2024-02-28_2024-02-28"), (D(2024, 2, 29), D(2024, 2, 29), "2024-02-29_2024-02-29"),
          (D(2024, 3, 1), D(2024, 3, 1), "2024-03-01_2024-03-01")]),
    ],
)
def test_plan_edges(start, end, granularity, expected):
    assert spans(start, end, granularity) == expected


def test_old_tools_backfill_is_22_monthly_chunks_covering_every_day_once():
    chunks = plan_chunks(DateRange.parse("2024-01-01", "2025-10-16"))
    assert len(chunks) == 22
    assert chunks[0].chunk_id == "2024-01" and chunks[-1].chunk_id == "2025-10-01_2025-10-16"
    assert all(a.end == b.start for a, b in zip(chunks, chunks[1:]))
    assert sum(c.days for c in chunks) == (D(2025, 10, 16) - D(2024, 1, 1)).days + 1


@pytest.mark.parametrize("start, end, fragment", [
    ("2024-02-01", "2024-01-31", "--end-date 2024-01-31 is before --start-date 2024-02-01"),
    ("2024-02-30", "2024-03-01", "--start-date '2024-02-30' is not a date"),
    ("2024-1-1", "2024-03-01", "--start-date '2024-1-1' is not a date"),
    ("2024-01-01", "tomorrow", "--end-date 'tomorrow' is not a date"),
])
def test_bad_ranges(start, end, fragment):
    with pytest.raises(DateRangeError) as err:
        DateRange.parse(start, end)
    assert fragment in str(err.value)
    assert isinstance(err.value, ValueError)


def test_chunk_is_half_open_and_round_trips():
    chunk = Chunk(D(2024, 1, 1), D(2024, 2, 1))
    assert chunk.days == 31 and chunk.last_day == D(2024, 1, 31)
    assert Chunk.from_json(chunk.to_json()) == chunk
    with pytest.raises(DateRangeError):
        Chunk(D(2024, 1, 2), D(2024, 1, 2))
