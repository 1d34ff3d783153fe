"""The durable record of a run: chunk states, attempts, rows, seconds, errors, the driver's heartbeat.

Kept under the ledger dir (`<ledger_dir>/<run_id>/`; where that is: `ledger_location`), written by
the run's driver, the only writer, as a snapshot plus an append-only event log:
  ledger.json    the whole record, replaced atomically (temp file + rename on a file system, one
                 PUT on an object store) when the run starts and ends, and once every `len(tasks)`
                 events, so an event costs the same whatever the run's size (amortised);
  events.jsonl   one line per task change or heartbeat since the snapshot (on an object store,
                 one small object per event under events/); lines with a sequence number the
                 snapshot already holds, or a torn last line, are skipped when read.
Resume and status read snapshot + events — also after the driver was killed, when chunks still
say `running` and the heartbeat stops: `driver_state` tells a live driver from a lost one.

  state.py        the run's state and its legal changes (pure: no I/O)
  codec.py        the on-disk format: JSON bytes, its version, reading older versions
  store.py        `RunStore`, the storage interface, keyed by (run id, name)
  local_store.py  `LocalStore`: a local or shared folder (atomic create through os.link)
  arrow_store.py  `ArrowStore`: a pyarrow file system by URI, s3a:// or file:// (no atomic create)
  location.py     where a catalog's ledgers and a run's logs live; S3 settings
  run_ledger.py   `RunLedger`: snapshot + events in a store; `open_ledger`
  lease.py        the driver's lease and heartbeat, liveness, live runs, a lost run closed as cancelled
"""

from ray_backfill.ledger.arrow_store import ArrowStore
from ray_backfill.ledger.codec import LEDGER_VERSION
from ray_backfill.ledger.lease import (
    HEARTBEAT_S,
    STALE_S,
    Heartbeat,
    check_no_live_driver,
    driver_state,
    live_runs,
    mark_cancelled,
    take_lease,
)
from ray_backfill.ledger.local_store import LocalStore
from ray_backfill.ledger.location import ledger_location, run_log_dir, s3_options
from ray_backfill.ledger.run_ledger import RunLedger, open_ledger
from ray_backfill.ledger.state import (
    HISTORY_KEPT,
    RUN_ID_PATTERN,
    ChunkStatus,
    RunRecord,
    TaskRecord,
    attempt_entry,
    check_run_id,
    new_run_id,
    utcnow,
)
from ray_backfill.ledger.store import AtomicCreateUnsupported, RunStore

__all__ = [
    "HEARTBEAT_S", "HISTORY_KEPT", "LEDGER_VERSION", "RUN_ID_PATTERN", "STALE_S", "ArrowStore",
    "AtomicCreateUnsupported", "ChunkStatus", "Heartbeat", "LocalStore", "RunLedger", "RunRecord", "RunStore",
    "TaskRecord", "attempt_entry", "check_no_live_driver", "check_run_id", "driver_state", "ledger_location",
    "live_runs", "mark_cancelled", "new_run_id", "open_ledger", "run_log_dir", "s3_options", "take_lease", "utcnow",
]
