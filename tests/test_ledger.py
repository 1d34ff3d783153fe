"""Ledger records: legal transitions, JSON round trip, atomic files."""

from __future__ import annotations

import pytest

from ray_backfill.ledger import ChunkStatus, IllegalTransition, RunLedger, RunRecord, TaskRecord


def test_terminal_states():
    assert {s for s in ChunkStatus if s.is_terminal()} == {ChunkStatus.SUCCEEDED, ChunkStatus.FAILED, ChunkStatus.CANCELLED}


def test_illegal_transition_raises():
    task = TaskRecord("bronze-2024-01", "bronze", "2024-01-01", "2024-02-01")
    task.move(ChunkStatus.RUNNING, attempts=1)
    task.move(ChunkStatus.SUCCEEDED, rows=10)
    with pytest.raises(IllegalTransition, match="succeeded to running"):
        task.move(ChunkStatus.RUNNING)


def test_round_trip_and_listing(tmp_path):
    ledger = RunLedger.for_warehouse(tmp_path)
    record = RunRecord("20240101T000000Z-abc", {"x": 1}, [TaskRecord("gold", "gold", "2024-01-01", "2024-02-01")])
    record.tasks[0].move(ChunkStatus.RUNNING, attempts=1)
    ledger.save(record)
    loaded = ledger.load(record.run_id)
    assert loaded.to_json() == record.to_json()
    assert ledger.run_ids() == [record.run_id]
    assert not list(ledger.path(record.run_id).parent.glob(".tmp-*"))


def test_unknown_run_names_the_path(tmp_path):
    with pytest.raises(ValueError, match="run 'nope' has no ledger at"):
        RunLedger.for_warehouse(tmp_path).load("nope")
