"""A run's lease and liveness: the driver's lease taken and kept fresh, whether a driver still
beats, the live runs on a warehouse, and a lost run closed as cancelled.

A driver takes its run's lease (`take_lease`) and writes a heartbeat into its run's ledger every
HEARTBEAT_S (`Heartbeat`); while it is fresh the run holds a lease on its dates on the warehouse
(`check_no_live_driver`), which expires on its own when the driver dies: no lock server, no
atomic write needed. A fencing token or a lease taken in one step would use `RunStore.create`,
which not every store offers.
"""

from __future__ import annotations

import _thread
import datetime as dt
import os
import socket
import threading
import time
from typing import TYPE_CHECKING

from jobs.errors import ConfigError, InputError
from ray_backfill.ledger.state import ChunkStatus, RunRecord, utcnow
from ray_backfill.logs import pid_alive

if TYPE_CHECKING:
    from ray_backfill.ledger.run_ledger import RunLedger

# A driver writes a heartbeat every HEARTBEAT_S; one silent for STALE_S is taken for lost.
HEARTBEAT_S = 10.0
STALE_S = 60.0
CANCEL_POLL_S = 2.0  # how often the driver looks for a `ray-backfill cancel` request


def _age_s(iso: str | None, now: dt.datetime | None = None) -> float | None:
    if not iso:
        return None
    now = now or dt.datetime.now(dt.timezone.utc)
    return (now - dt.datetime.fromisoformat(iso)).total_seconds()


def driver_state(record: RunRecord, now: dt.datetime | None = None) -> tuple[str, str]:
    """("finished" | "running" | "lost", one line saying so) for a run's driver.

    Lost: no heartbeat for STALE_S, or the driver's process is gone from this very host.
    """
    if record.outcome:
        return "finished", record.outcome
    age = _age_s(record.heartbeat_at, now)
    driver = record.driver or {}
    where = f"pid {driver.get('pid')} on {driver.get('host')}" if driver else "its driver"
    if age is None:
        return "lost", "driver lost (it never wrote a heartbeat)"
    gone_here = driver.get("host") == socket.gethostname() and not pid_alive(int(driver.get("pid", 0)))
    if gone_here or age > STALE_S:
        return "lost", f"driver lost ({where}; last heartbeat {record.heartbeat_at}, {age:.0f}s ago)"
    return "running", f"running ({where}; heartbeat {age:.0f}s ago)"


def live_runs(ledger: RunLedger, warehouse: str, exclude: str | None = None) -> list[RunRecord]:
    """The runs on `warehouse` whose driver is alive (a fresh heartbeat, `driver_state`), oldest
    first, but `exclude`; unreadable ledgers are skipped (`status` names them)."""
    live = []
    for run_id in ledger.run_ids():
        if run_id == exclude:
            continue
        try:
            record = ledger.load(run_id)
        except InputError:
            continue
        if (record.outcome is None and driver_state(record)[0] == "running"
                and record.request["settings"]["catalog"]["warehouse"] == warehouse):
            live.append(record)
    return live


def mark_cancelled(ledger: RunLedger, record: RunRecord, why: str) -> None:
    """Record a run whose driver is gone as cancelled (what its own Ctrl-C would have written)."""
    record.cancel(why)
    ledger.save(record)


def _overlaps(a: dict, b: dict) -> bool:
    return a["start_date"] <= b["end_date"] and b["start_date"] <= a["end_date"]


def check_no_live_driver(ledger: RunLedger, record: RunRecord, *, earlier_only: bool = False) -> None:
    """Refuse a second driver on a run whose driver is alive, and a run whose dates overlap a live
    run's on the same warehouse (their chunks would replace each other's rows).

    A run is live while its heartbeat is fresh (driver_state): the lease expires on its own
    when its driver dies. Unreadable ledgers of other runs are skipped here (`status` names them).
    Two drivers starting at the same moment both pass this check; each looks again once its own
    lease is written (`earlier_only`), and only the run created first keeps going.
    """
    state, line = driver_state(record) if record.driver and not earlier_only else ("new", "")
    if state == "running":
        raise ConfigError(f"run {record.run_id} is still {line}; wait for it to end, or stop it, before resuming")
    warehouse = record.request["settings"]["catalog"]["warehouse"]
    for other in live_runs(ledger, warehouse, exclude=record.run_id):
        if earlier_only and (other.created_at, other.run_id) > (record.created_at, record.run_id):
            continue  # that one gives way to this one
        if _overlaps(other.request, record.request):
            raise ConfigError(f"run {other.run_id} ({other.request['start_date']} .. {other.request['end_date']}) is "
                              f"{driver_state(other)[1]} on warehouse {warehouse} and overlaps "
                              f"{record.request['start_date']} .. {record.request['end_date']}; wait for it to "
                              "end, or give a range that does not overlap")


def take_lease(ledger: RunLedger, record: RunRecord) -> None:
    """This driver's lease on the run, written: the record reopened (a resume re-runs whatever did
    not succeed), this process named its driver, a first heartbeat, an earlier cancel request done."""
    for task in record.tasks:
        if task.status != ChunkStatus.SUCCEEDED:
            task.status = ChunkStatus.PENDING
    record.outcome, record.finished_at, record.error = None, None, None
    record.driver = {"host": socket.gethostname(), "pid": os.getpid()}
    record.heartbeat_at = utcnow()
    ledger.clear_cancel(record.run_id)  # a cancel asked of an earlier driver of this run is done
    ledger.save(record)


class Heartbeat:
    """Writes the driver's heartbeat to the run's log every `every_s` from a thread, while open;
    also stops the run (as Ctrl-C does) when `ray-backfill cancel` asked for it."""

    def __init__(self, ledger: RunLedger, record: RunRecord, every_s: float | None = None):
        self.ledger, self.record, self.every_s = ledger, record, every_s or HEARTBEAT_S
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="ledger-heartbeat", daemon=True)

    def _beat(self) -> None:
        poll = min(CANCEL_POLL_S, self.every_s)
        last, asked = time.monotonic(), False
        while not self._stop.wait(poll):
            try:
                if not asked and self.ledger.cancel_requested(self.record.run_id):
                    asked = True  # `ray-backfill cancel`: the same path as Ctrl-C in the main thread
                    _thread.interrupt_main()
                if time.monotonic() - last >= self.every_s:
                    last = time.monotonic()
                    self.ledger.event(self.record, heartbeat_at=utcnow())
            except Exception:  # a missed beat is not the run's failure; the next one may land
                continue

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
