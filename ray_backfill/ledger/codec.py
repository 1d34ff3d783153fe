"""The ledger's on-disk format: JSON bytes, the format's version, and reading older versions.

A run's snapshot (`ledger.json`) carries `"version"`: the format it is written in, LEDGER_VERSION
today. Versions 1..LEDGER_VERSION read: an older record is brought up to date one version at a
time by `_UPGRADES` before it becomes a `RunRecord`; any other version (a later release's, or none)
is refused with one line. A release that changes the format raises LEDGER_VERSION and adds
`_UPGRADES[old]`, which turns a record of version `old` into one of version `old + 1`; and a copy
of a run in the old format under tests/fixtures/ with a test that it still reads (as `ledger_v1`).

  version 1   the format since the first release: the snapshot's keys are `RunRecord.to_json()`'s.

The event lines (`events.jsonl`, or one object per event) carry no version of their own: they are
read in the version of the snapshot they follow. A driver writes its snapshot (in its own release's
version) before its first event, and every snapshot drops the events before it.

Pure: bytes in, dicts out; where the bytes are kept is `store.py`'s concern.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable

from jobs.errors import InputError

LEDGER_VERSION = 1

# version -> a function turning a record of that version into one of the next version
_UPGRADES: dict[int, Callable[[dict], dict]] = {}


def dump(data: dict) -> bytes:
    """A snapshot's (or the report's, a cancel request's) bytes: indented, sorted keys."""
    return json.dumps(data, indent=1, sort_keys=True).encode()


def upgrade(data: dict) -> dict:
    """A snapshot's fields in today's format (LEDGER_VERSION), or InputError for a version this
    release does not read."""
    version = data.get("version")
    if type(version) is not int or not 1 <= version <= LEDGER_VERSION:
        readable = "1" if LEDGER_VERSION == 1 else f"1..{LEDGER_VERSION}"
        raise InputError(f"ledger version {version!r} is not {readable}; written by another release")
    while version < LEDGER_VERSION:
        data = _UPGRADES[version](data)
        version += 1
        data["version"] = version
    return data


def parse(data: bytes) -> dict:
    """A snapshot's fields as written (`RunRecord.from_json` upgrades them); ValueError for bytes
    that are not JSON, TypeError for JSON that is not an object."""
    fields = json.loads(data)
    if not isinstance(fields, dict):
        raise TypeError(f"a ledger is a JSON object, not {type(fields).__name__}")
    return fields


def event_line(seq: int, task: dict | None = None, **fields: Any) -> bytes:
    """One event of the log: its sequence number, a task's new state (`TaskRecord.to_json()`) and/or
    fields such as `heartbeat_at`; one line, keys sorted."""
    data: dict[str, Any] = {"seq": seq, **fields}
    if task is not None:
        data["task"] = task
    return json.dumps(data, sort_keys=True).encode() + b"\n"


def parse_events(lines: Iterable[bytes], after: int) -> list[dict]:
    """The events in `lines` to replay on a snapshot holding those up to `after` (its `seq`), in
    order: each one's sequence number is past the one before it (events the snapshot already holds
    are skipped); a line that is not JSON (a torn last line: the driver died mid-append) is skipped."""
    events = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("seq", 0) > after:
            events.append(event)
            after = event["seq"]
    return events
