"""A run's state without any storage: transitions, attempts, events replayed, a lost run cancelled."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

from jobs.errors import IllegalTransition, InputError
from ray_backfill.ledger import codec, state
from ray_backfill.ledger.state import (
    HISTORY_KEPT,
    RUN_ID_PATTERN,
    ChunkStatus,
    RunRecord,
    TaskRecord,
    attempt_entry,
    check_run_id,
    new_run_id,
)

S = ChunkStatus
LEGAL = {(S.PENDING, S.RUNNING), (S.PENDING, S.CANCELLED), (S.PENDING, S.SUCCEEDED),
         (S.RUNNING, S.SUCCEEDED), (S.RUNNING, S.FAILED), (S.RUNNING, S.CANCELLED), (S.RUNNING, S.PENDING),
         (S.FAILED, S.PENDING), (S.CANCELLED, S.PENDING)}


def _task(status: ChunkStatus = S.PENDING, task_id: str = "bronze-2024-01") -> TaskRecord:
    return TaskRecord(task_id, "bronze", "2024-01-01", "2024-02-01", status=status)


def _record(tasks: int = 3) -> RunRecord:
    return RunRecord("20240101T000000Z-abc123", {"x": 1}, [_task(task_id=f"bronze-{i}") for i in range(tasks)])


def test_the_state_modules_do_no_io():
    """state.py and codec.py import no file, network or process module: they are tested as here."""
    allowed = {"__future__", "dataclasses", "datetime", "enum", "json", "re", "typing", "uuid", "jobs.errors",
               "ray_backfill.ledger"}
    for module in (state, codec):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert imported <= allowed, (module.__name__, imported - allowed)


@pytest.mark.parametrize("old, new", list(itertools.product(S, S)), ids=lambda s: s.value)
def test_every_transition_is_legal_or_raises(old, new):
    task = _task(old)
    if old == new or (old, new) in LEGAL:
        task.move(new, attempts=3)
        assert task.status == new and task.attempts == 3
    else:
        with pytest.raises(IllegalTransition, match=f"task bronze-2024-01: cannot go from {old.value} to {new.value}"):
            task.move(new, attempts=3)
        assert task.status == old and task.attempts == 0
    assert old.can_become(new) == ((old, new) in LEGAL)


def test_a_move_stamps_the_time_and_sets_the_fields():
    task = _task()
    task.updated_at = "2000-01-01T00:00:00+00:00"
    task.move(S.RUNNING, attempts=1, node_id="n1")
    assert (task.attempts, task.node_id) == (1, "n1") and task.updated_at > "2000"


def test_the_history_keeps_the_last_attempts_and_an_entry_only_what_it_knows():
    task = _task()
    for attempt in range(1, HISTORY_KEPT + 4):
        task.log_attempt(attempt_entry(attempt, "failed", 1.0, 2.0, error="x" * 500))
    assert [e["attempt"] for e in task.history] == list(range(4, HISTORY_KEPT + 4))
    assert len(task.history[0]["error"]) == 200
    assert attempt_entry(1, "cancelled", None, 3.0, standby=False) == {"attempt": 1, "status": "cancelled",
                                                                       "ended_at": 3.0}
    assert attempt_entry(2, "failed", 1.0, 2.0, standby=True, node_id="n")["standby"] is True


def test_records_round_trip_through_their_fields_with_the_format_version():
    record = _record()
    record.tasks[0].move(S.RUNNING, attempts=1, metrics={"phases": {"fetch": 1.5}})
    record.tasks[0].log_attempt(attempt_entry(1, "failed", 1.0, 2.0))
    record.driver, record.heartbeat_at, record.seq = {"host": "h", "pid": 1}, "2024-01-01T00:00:00+00:00", 7
    data = record.to_json()
    assert data["version"] == codec.LEDGER_VERSION and data["tasks"][0]["status"] == "running"
    assert RunRecord.from_json(data).to_json() == data
    assert TaskRecord.from_json(data["tasks"][0]) == record.tasks[0]


def test_events_replay_onto_a_record():
    record = _record()
    changed = _task(S.RUNNING, task_id="bronze-1")
    record.apply({"seq": 1, "task": changed.to_json()})
    record.apply({"seq": 2, "heartbeat_at": "2024-01-01T00:00:10+00:00"})
    assert record.task("bronze-1") == changed and record.tasks[1] == changed
    assert record.heartbeat_at == "2024-01-01T00:00:10+00:00" and record.seq == 2
    assert [t.task_id for t in record.by_stage("bronze")] == ["bronze-0", "bronze-1", "bronze-2"]
    with pytest.raises(StopIteration):  # an event for a task the run does not have
        record.apply({"seq": 3, "task": _task(task_id="gold").to_json()})


def test_a_lost_run_cancelled_ends_its_open_tasks_and_keeps_their_errors():
    record = _record(4)
    record.tasks[0].move(S.SUCCEEDED)
    record.tasks[1].move(S.RUNNING, error="earlier")
    record.tasks[2].move(S.RUNNING)
    record.cancel("driver lost")
    assert [t.status for t in record.tasks] == [S.SUCCEEDED, S.CANCELLED, S.CANCELLED, S.CANCELLED]
    assert [t.error for t in record.tasks] == [None, "earlier", "driver lost", "driver lost"]
    assert record.outcome == "cancelled" and record.finished_at


def test_run_ids_are_made_and_checked():
    assert RUN_ID_PATTERN.fullmatch(new_run_id())
    assert check_run_id("20240101T000000Z-1a2b3c") == "20240101T000000Z-1a2b3c"
    for bad in ("../x", "20240101T000000Z-1A2B3C", None):
        with pytest.raises(InputError, match="is not a run id"):
            check_run_id(bad)
