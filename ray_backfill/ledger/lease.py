"""A run's liveness: whether its driver still beats, the live runs on a warehouse, and a lost run
closed as cancelled.

A driver writes a heartbeat into its run's ledger every HEARTBEAT_S (runner._Heartbeat); while it
is fresh the run holds a lease on its dates on the warehouse (runner.check_no_live_driver), which
expires on its own when the driver dies: no lock server, no atomic write needed. A fencing token
or a lease taken in one step would use `RunStore.create`, which not every store offers.
"""

from __future__ import annotations

import datetime as dt
import socket
from typing import TYPE_CHECKING

from jobs.errors import InputError
from ray_backfill.ledger.state import RunRecord
from ray_backfill.logs import pid_alive

if TYPE_CHECKING:
    from ray_backfill.ledger.run_ledger import RunLedger

# A driver writes a heartbeat every HEARTBEAT_S; one silent for STALE_S is taken for lost.
HEARTBEAT_S = 10.0
STALE_S = 60.0


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
