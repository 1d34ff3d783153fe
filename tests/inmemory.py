"""An executor that runs no Spark: each attempt is a plain function call with a scripted outcome.

It lets the scheduling loop (retry, backoff, barrier, cancel, resume, ledger) be tested in
milliseconds with the real runner, ledger and request. An attempt finishes after `polls` calls
of `wait`, so several are in flight at once as they are with Ray.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from jobs.tasks import Task, TaskOutcome
from ray_backfill.executors.base import Executor, TaskResult

# What an attempt does: "ok", "fail" (a retryable error), "permanent" (an error no retry can
# fix, e.g. HTTP 400), "cancelled" (stopped on purpose).
Behaviour = Callable[[Task], str]


def scripted(script: dict[str, list[str]]) -> Behaviour:
    """Outcome per task id and attempt (1-based); attempts past the list, and other tasks, succeed."""
    def behaviour(task: Task) -> str:
        steps = script.get(task.task_id, [])
        return steps[task.attempt - 1] if task.attempt <= len(steps) else "ok"
    return behaviour


@dataclass(eq=False)
class Call:
    task: Task
    started: float  # monotonic seconds
    polls_left: int


@dataclass
class InMemoryExecutor(Executor[Call]):
    """Runs attempts as function calls; records what started, finished and was cancelled, and when."""

    slots: int = 2
    behaviour: Behaviour = field(default=scripted({}))
    polls: int = 2
    # raise KeyboardInterrupt (Ctrl-C) on this call of `wait` (1-based), with attempts in flight
    interrupt_on_wait: int | None = None
    # raise `crash` on this call of `start` (1-based): the driver dies there
    crash_on_start: int | None = None
    crash: type[BaseException] = KeyboardInterrupt
    name: str = "memory"
    started: list[Call] = field(default_factory=list)
    events: list[tuple[str, str, int]] = field(default_factory=list)  # (event, task id, attempt)
    cancelled: list[Task] = field(default_factory=list)
    max_in_flight: int = 0
    # every `upcoming` call: the (task id, attempt) pairs the loop said start next, in order
    upcomings: list[list[tuple[str, int]]] = field(default_factory=list)
    entered: bool = False
    exited: bool = False
    _in_flight: set[int] = field(default_factory=set)
    _waits: int = 0

    def __enter__(self) -> "InMemoryExecutor":
        self.entered = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.exited = True

    def start(self, task: Task) -> Call:
        if self.crash_on_start is not None and len(self.started) + 1 == self.crash_on_start:
            raise self.crash(f"driver dies starting {task.task_id}")
        call = Call(task, time.monotonic(), self.polls)
        self.started.append(call)
        self.events.append(("start", task.task_id, task.attempt))
        self._in_flight.add(id(call))
        self.max_in_flight = max(self.max_in_flight, len(self._in_flight))
        return call

    def upcoming(self, tasks: list[Task]) -> None:
        told = [(t.task_id, t.attempt) for t in tasks]
        self.upcomings.append(told)
        self.events.append(("upcoming", ",".join(f"{i}#{a}" for i, a in told), len(told)))

    def wait(self, handles: list[Call], timeout_s: float) -> list[tuple[Call, TaskResult]]:
        self._waits += 1
        if self.interrupt_on_wait is not None and self._waits == self.interrupt_on_wait:
            raise KeyboardInterrupt("Ctrl-C")
        done = []
        for call in handles:
            call.polls_left -= 1
            if call.polls_left <= 0:
                done.append((call, self._result(call.task)))
                self._in_flight.discard(id(call))
                self.events.append(("end", call.task.task_id, call.task.attempt))
        return done

    def _result(self, task: Task) -> TaskResult:
        what = self.behaviour(task)
        if what == "ok":
            rows = 0 if task.stage == "prepare" else 100
            return TaskResult(ok=True, outcome=TaskOutcome(rows=rows, tables={task.stage: rows}), seconds=0.01)
        if what == "cancelled":
            return TaskResult(ok=False, error="cancelled", cancelled=True)
        if what == "permanent":
            return TaskResult(ok=False, error=f"open-meteo refused the request (HTTP 400) in {task.task_id}",
                              permanent=True)
        return TaskResult(ok=False, error=f"scripted failure of {task.task_id} attempt {task.attempt}")

    def cancel(self, handles: list[Call]) -> None:
        for call in handles:
            self.cancelled.append(call.task)
            self._in_flight.discard(id(call))

    def starts_of(self, task_id: str) -> list[Call]:
        return [c for c in self.started if c.task.task_id == task_id]
