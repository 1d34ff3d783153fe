"""What the driver's console shows: plain event lines off a terminal; in one, a live display (rich)
with the ETA and the attempts in flight, and only finished tasks as lines. Real loop and ledger,
the in-memory executor."""

from __future__ import annotations

import datetime as dt
import io
import time

from rich.console import Console

from jobs.config import CatalogConfig, PipelineConfig, Settings
from jobs.dates import DateRange
from ray_backfill.ledger import ChunkStatus, RunRecord, TaskRecord
from ray_backfill.progress import Flight, Progress, eta_seconds
from ray_backfill.loop import RetryPolicy
from ray_backfill.request import BackfillRequest
from ray_backfill.runner import run_backfill
from tests.inmemory import InMemoryExecutor, scripted


def _record(*tasks: TaskRecord) -> RunRecord:
    return RunRecord("20240101T000000Z-abcdef", {}, list(tasks))


def _task(task_id: str, stage: str, status: ChunkStatus, seconds: float = 0.0) -> TaskRecord:
    return TaskRecord(task_id, stage, "2024-01-01", "2024-02-01", status=status, seconds=seconds)


def test_the_eta_shares_bronze_chunks_over_the_slots_and_adds_the_later_stages():
    ok, pending, running = ChunkStatus.SUCCEEDED, ChunkStatus.PENDING, ChunkStatus.RUNNING
    record = _record(_task("prepare", "prepare", ok, 3), _task("b1", "bronze", ok, 10), _task("b2", "bronze", ok, 20),
                     _task("b3", "bronze", running), _task("b4", "bronze", pending), _task("b5", "bronze", pending),
                     _task("silver", "silver", pending), _task("gold", "gold", pending))
    # a chunk takes the median, 15 s; b3 has run 5 s of it; silver and gold take a chunk's time each
    flights = [Flight("b3", 1, began=1000.0)]
    assert eta_seconds(record, slots=2, flights=flights, now=1005.0) == (10 + 15 + 15) / 2 + 15 + 15
    # a stage measured once uses its own time; a failed chunk is not waited for
    record.tasks[6] = _task("silver", "silver", ok, 40)
    record.tasks[4] = _task("b4", "bronze", ChunkStatus.FAILED, 2)
    assert eta_seconds(record, slots=2, flights=flights, now=1005.0) == (10 + 15) / 2 + 15
    # nothing measured yet: no guess
    assert eta_seconds(_record(_task("b1", "bronze", running)), 2, []) is None


class _Slow(InMemoryExecutor):
    """Attempts take a few tenths of a second, and say what phase they are in."""

    def wait(self, handles, timeout_s):
        time.sleep(0.15)
        return super().wait(handles, timeout_s)

    def phases(self, handles):
        return {call.task.task_id: f"phase-{call.polls_left}" for call in handles}


def _request(tmp_path) -> BackfillRequest:
    settings = Settings(catalog=CatalogConfig(warehouse=str(tmp_path / "wh")),
                        pipeline=PipelineConfig(locations=("hanoi", "hcmc")))
    return BackfillRequest(settings=settings, date_range=DateRange(dt.date(2024, 1, 1), dt.date(2024, 3, 31)))


def test_in_a_terminal_a_live_display_shows_the_flights_and_only_finished_tasks_print(tmp_path):
    screen = io.StringIO()
    progress = Progress(tty=True, console=Console(file=screen, force_terminal=True, width=110))
    lines: list[str] = []
    progress.echo = lines.append
    executor = _Slow(slots=2, polls=4, behaviour=scripted({"bronze-2024-02": ["fail"]}))
    record = run_backfill(_request(tmp_path), echo=lines.append, progress=progress, executor=executor,
                          retry=RetryPolicy(base_s=0.01, cap_s=0.01))
    assert record.outcome == "succeeded"
    # finished tasks and the retry print a line each; starts are only in the display
    assert not [line for line in lines if "running (attempt" in line]
    assert "  bronze-2024-01: succeeded, 100 rows in 0.0s" in lines
    assert any(line.startswith("  bronze-2024-02: attempt 1 failed (scripted failure") for line in lines)
    drawn = screen.getvalue()
    assert "tasks" in drawn and "elapsed" in drawn and "ETA" in drawn
    assert "bronze 0/3 (2 running)" in drawn  # counts per stage
    assert "bronze-2024-01" in drawn and "phase-" in drawn  # the attempts in flight, with their phase
    assert not progress.live  # the display is gone when the run ends


def test_off_a_terminal_every_event_is_a_plain_line_and_no_display_is_drawn(tmp_path, capsys):
    lines: list[str] = []
    progress = Progress(lines.append, tty=False)
    record = run_backfill(_request(tmp_path), echo=lines.append, progress=progress,
                          executor=InMemoryExecutor(slots=2))
    assert record.outcome == "succeeded"
    assert "  bronze-2024-01: running (attempt 1)" in lines
    assert "  bronze-2024-01: succeeded, 100 rows in 0.0s" in lines
    assert not progress.live
    assert "\x1b[" not in capsys.readouterr().out  # no escape codes anywhere


def test_a_worker_tells_its_phases_through_a_file_next_to_its_result(tmp_path):
    from jobs.dates import Chunk
    from jobs.tasks import Task
    from ray_backfill.worker import PHASE_FILE, _checkpoint

    payload = {"result_path": str(tmp_path / "result.json")}
    phase = tmp_path / PHASE_FILE
    chunk = Chunk(dt.date(2024, 1, 1), dt.date(2024, 2, 1))
    bronze = _checkpoint(payload, Task("bronze-2024-01", "bronze", chunk, 1, "20240101T000000Z-abcdef"))
    silver = _checkpoint(payload, Task("silver", "silver", chunk, 1, "20240101T000000Z-abcdef"))
    seen = []
    for checkpoint, point in ((bronze, "start"), (bronze, "before_write"), (silver, "before_write"), (bronze, "stop")):
        checkpoint(point)
        seen.append(phase.read_text())
    assert seen == ["session start", "write", "work", "session stop"]
    assert not list(tmp_path.glob("*.tmp"))  # replaced whole: a reader never sees half a name
