"""The scheduling loop on an in-memory executor: retry and backoff, permanent failure, the barrier,
cancel mid-phase, resume after a driver crash at every step, legal ledger transitions.

Real runner, request, ledger (JSON files in tmp_path) and progress lines; only the executor is a
plain-function stand-in (tests/inmemory.py), so each test runs in milliseconds.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from jobs.config import CatalogConfig, PipelineConfig, Settings
from jobs.dates import DateRange
from ray_backfill.ledger import ChunkStatus, RunLedger, RunRecord, open_ledger
from ray_backfill.progress import Progress
from ray_backfill.loop import RetryPolicy
from ray_backfill.request import BackfillRequest
from ray_backfill.runner import run_backfill
from tests.inmemory import InMemoryExecutor, scripted

NO_WAIT = RetryPolicy(base_s=0.001, cap_s=0.001)
BRONZE = ["bronze-2024-01", "bronze-2024-02", "bronze-2024-03", "bronze-2024-04"]


class RecordingLedger(RunLedger):
    """The real ledger, keeping a copy of the record it holds after every write (snapshot + events):
    what a killed driver leaves."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.versions: list[dict] = []

    def save(self, record: RunRecord) -> None:
        super().save(record)
        self.versions.append(self.load(record.run_id).to_json())

    def event(self, record: RunRecord, task=None, **fields) -> None:
        super().event(record, task, **fields)
        if task is not None:  # heartbeats change no state
            self.versions.append(self.load(record.run_id).to_json())

    def leave(self, version: dict) -> None:
        """Put the run's files back to how they were at `version`, its driver long dead (SIGKILL)."""
        version = {**version, "heartbeat_at": "2000-01-01T00:00:00+00:00"}
        Path(self.path(version["run_id"])).write_text(json.dumps(version))
        (Path(self.path(version["run_id"])).parent / "events.jsonl").unlink(missing_ok=True)


def _request(tmp_path: Path, **kwargs) -> BackfillRequest:
    settings = Settings(catalog=CatalogConfig(warehouse=str(tmp_path / "wh")),
                        pipeline=PipelineConfig(locations=("hanoi", "hcmc")))
    return BackfillRequest(settings=settings, date_range=DateRange(dt.date(2024, 1, 1), dt.date(2024, 4, 30)),
                           **{"retries": 2, **kwargs})


def _run(request: BackfillRequest, executor: InMemoryExecutor, ledger: RunLedger | None = None,
         record: RunRecord | None = None, retry: RetryPolicy = NO_WAIT) -> tuple[RunRecord, list[str]]:
    lines: list[str] = []
    record = run_backfill(request, record, echo=lines.append, progress=Progress(lines.append, tty=False),
                          ledger=ledger, executor=executor, retry=retry)
    return record, lines


def _states(record: RunRecord) -> dict[str, str]:
    return {t.task_id: t.status.value for t in record.tasks}


def test_a_clean_run_runs_every_task_once_in_phase_order_within_the_slots(tmp_path):
    executor = InMemoryExecutor(slots=2)
    record, lines = _run(_request(tmp_path), executor)
    assert record.outcome == "succeeded" and executor.entered and executor.exited
    assert set(_states(record).values()) == {"succeeded"}
    order = [c.task.task_id for c in executor.started]
    assert order == ["prepare", *BRONZE, "silver", "gold"]
    assert executor.max_in_flight == 2  # bronze chunks overlapped, never more than the slots
    assert all(c.task.run_id == record.run_id and c.task.attempt == 1 for c in executor.started)
    assert [t.rows for t in record.by_stage("bronze")] == [100] * 4
    on_disk = open_ledger(_request(tmp_path).settings.catalog).load(record.run_id)
    assert on_disk.outcome == "succeeded" and _states(on_disk) == _states(record)
    assert lines[-4].startswith(f"run {record.run_id} succeeded in ")
    assert [line.split(":")[0].strip() for line in lines[-3:]] == ["tables", "report", "logs"]


def test_a_failed_attempt_is_retried_after_a_growing_backoff(tmp_path):
    class Recorded(RetryPolicy):
        def delay(self, failures: int) -> float:
            delays.append(super().delay(failures))
            return delays[-1]

    delays: list[float] = []
    executor = InMemoryExecutor(behaviour=scripted({"bronze-2024-02": ["fail", "fail"]}))
    record, lines = _run(_request(tmp_path), executor, retry=Recorded(base_s=0.05, cap_s=0.08, jitter=(1.0, 1.0)))
    assert record.outcome == "succeeded"
    task = record.task("bronze-2024-02")
    assert task.status == ChunkStatus.SUCCEEDED and task.attempts == 3 and task.error is None
    assert delays == [0.05, 0.08]  # doubled, then capped
    starts = executor.starts_of("bronze-2024-02")
    assert [c.task.attempt for c in starts] == [1, 2, 3]
    # an attempt never starts before its backoff is over (the end of the failed one is a poll later)
    assert starts[1].started - starts[0].started >= 0.05 and starts[2].started - starts[1].started >= 0.08
    assert any("attempt 1 failed (scripted failure of bronze-2024-02 attempt 1); retry in" in line for line in lines)


def test_a_permanent_failure_holds_the_barrier_and_prints_the_resume_command(tmp_path):
    executor = InMemoryExecutor(behaviour=scripted({"bronze-2024-03": ["fail"] * 5}))
    record, lines = _run(_request(tmp_path, retries=1), executor)
    assert record.outcome == "failed"
    assert record.task("bronze-2024-03").status == ChunkStatus.FAILED and record.task("bronze-2024-03").attempts == 2
    assert [record.task(t).status for t in ("bronze-2024-01", "bronze-2024-02", "bronze-2024-04")] == [
        ChunkStatus.SUCCEEDED] * 3
    # the barrier: neither silver nor gold ever started
    assert {c.task.stage for c in executor.started} == {"prepare", "bronze"}
    assert record.task("silver").status == ChunkStatus.PENDING and record.task("gold").status == ChunkStatus.PENDING
    assert f"resume with: ray-backfill resume {record.run_id} --warehouse" in lines[-1]
    assert "  silver and gold did not run: not every bronze chunk committed" in lines


def test_silver_starts_only_after_every_bronze_attempt_has_ended(tmp_path):
    executor = InMemoryExecutor(slots=3, polls=3, behaviour=scripted({"bronze-2024-04": ["fail"]}))
    _run(_request(tmp_path), executor)
    silver_at = executor.events.index(("start", "silver", 1))
    bronze_ends = [i for i, (event, task_id, _) in enumerate(executor.events)
                   if event == "end" and task_id.startswith("bronze")]
    assert len(bronze_ends) == 5 and max(bronze_ends) < silver_at
    assert executor.events.index(("start", "gold", 1)) > executor.events.index(("end", "silver", 1))


def test_a_cancelled_attempt_is_not_retried(tmp_path):
    executor = InMemoryExecutor(behaviour=scripted({"bronze-2024-01": ["cancelled"]}))
    record, _ = _run(_request(tmp_path), executor)
    assert record.task("bronze-2024-01").status == ChunkStatus.CANCELLED
    assert len(executor.starts_of("bronze-2024-01")) == 1 and record.outcome == "failed"


def test_ctrl_c_mid_phase_cancels_what_is_in_flight_and_keeps_what_committed(tmp_path):
    request = _request(tmp_path)
    executor = InMemoryExecutor(slots=2, polls=2, interrupt_on_wait=5)
    with pytest.raises(KeyboardInterrupt):
        _run(request, executor)
    ledger = open_ledger(request.settings.catalog)
    (run_id,) = ledger.run_ids()
    record = ledger.load(run_id)
    assert record.outcome == "cancelled" and record.finished_at
    in_flight = {t.task_id for t in executor.cancelled}
    assert in_flight and in_flight <= set(BRONZE)
    states = _states(record)
    assert all(states[t] == "cancelled" for t in in_flight)
    assert "succeeded" in states.values()  # what committed before Ctrl-C stays committed
    assert all(s in ("succeeded", "cancelled") for s in states.values())
    # resume finishes the run and re-runs only what did not succeed
    again = InMemoryExecutor()
    resumed, _ = _run(request, again, ledger=ledger, record=record)
    assert resumed.outcome == "succeeded"
    assert {c.task.task_id for c in again.started} == {t for t, s in states.items() if s != "succeeded"}


@pytest.mark.parametrize("crash_at", range(1, 8))  # 7 starts: prepare, 4 bronze, silver, gold
def test_resume_after_the_driver_died_at_any_step_runs_each_unfinished_task_once(tmp_path, crash_at):
    """The driver is killed (the ledger stays as last written) at each step: resume completes the run."""
    request = _request(tmp_path)
    ledger = RecordingLedger(RunLedger.for_warehouse(tmp_path / "wh").root)
    executor = InMemoryExecutor(slots=2, crash_on_start=crash_at, crash=SystemExit)
    with pytest.raises(SystemExit):
        _run(request, executor, ledger=ledger)
    # what a SIGKILL leaves: the last version written before the crash, not the driver's final save
    left = next(v for v in reversed(ledger.versions) if v["outcome"] is None)
    ledger.leave(left)
    record = ledger.load(request.run_id)
    done_before = {t.task_id for t in record.tasks if t.status == ChunkStatus.SUCCEEDED}
    again = InMemoryExecutor(slots=2)
    resumed, _ = _run(request, again, ledger=ledger, record=record)
    assert resumed.outcome == "succeeded"
    rerun = [c.task.task_id for c in again.started]
    assert sorted(rerun) == sorted({t.task_id for t in record.tasks} - done_before)  # each once, none twice
    assert [t for t in rerun if t in ("prepare", "silver", "gold")] == [
        t for t in ("prepare", "silver", "gold") if t not in done_before]


def test_every_ledger_version_changes_states_only_by_legal_transitions(tmp_path):
    ledger = RecordingLedger(RunLedger.for_warehouse(tmp_path / "wh").root)
    executor = InMemoryExecutor(behaviour=scripted({"bronze-2024-02": ["fail"], "bronze-2024-04": ["fail"] * 3}))
    record, _ = _run(_request(tmp_path), executor, ledger=ledger)
    assert record.outcome == "failed" and len(ledger.versions) > 10
    seen: dict[str, list[str]] = {}
    for version in ledger.versions:
        for task in version["tasks"]:
            history = seen.setdefault(task["task_id"], [task["status"]])
            if history[-1] != task["status"]:
                assert ChunkStatus(history[-1]).can_become(ChunkStatus(task["status"])), (task["task_id"], history)
                history.append(task["status"])
    assert seen["bronze-2024-02"] == ["pending", "running", "pending", "running", "succeeded"]
    assert seen["bronze-2024-04"] == ["pending", "running", "pending", "running", "pending", "running", "failed"]
    assert seen["silver"] == ["pending"]


def _announced_before_started(executor: InMemoryExecutor) -> list[tuple[str, int]]:
    """Every (task, attempt) the loop announced as upcoming after it had already started: must be none."""
    started: set[tuple[str, int]] = set()
    late = []
    for event in executor.events:
        if event[0] == "start":
            started.add((event[1], event[2]))
        elif event[0] == "upcoming":
            told = [tuple(x.split("#")) for x in event[1].split(",") if x]
            late += [(t, int(a)) for t, a in told if (t, int(a)) in started]
    return late


def test_the_executor_hears_what_starts_next_then_the_next_phase_then_nothing(tmp_path):
    executor = InMemoryExecutor(slots=2, polls=3, behaviour=scripted({"bronze-2024-02": ["fail"]}))
    record, _ = _run(_request(tmp_path), executor)
    assert record.outcome == "succeeded"
    told = executor.upcomings
    # while prepare runs: the bronze chunks, in order; it is the only prepare task
    assert told[0] == [(b, 1) for b in BRONZE]
    # the failed chunk comes back as its next attempt
    assert any(("bronze-2024-02", 2) in t for t in told)
    # the next phase is announced only once every attempt of this one has started
    silver_told = next(i for i, t in enumerate(told) if ("silver", 1) in t)
    assert all(not any(x[0].startswith("bronze") for x in t) for t in told[silver_told:])
    assert told[silver_told] == [("silver", 1)] and [("gold", 1)] in told[silver_told:]
    assert told[-1] == []  # the run is over: no standby may wait
    assert _announced_before_started(executor) == []
    # what was announced is what started, attempt for attempt
    announced = {x for t in told for x in t}
    assert announced == {(c.task.task_id, c.task.attempt) for c in executor.started} - {("prepare", 1)}


def test_a_failed_phase_withdraws_the_next_phase_it_announced(tmp_path):
    executor = InMemoryExecutor(slots=2, behaviour=scripted({"bronze-2024-04": ["fail"] * 5}))
    record, _ = _run(_request(tmp_path, retries=0), executor)
    assert record.outcome == "failed"
    assert executor.upcomings[-1] == []
    assert "silver" not in {c.task.task_id for c in executor.started}
