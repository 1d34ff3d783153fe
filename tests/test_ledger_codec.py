"""The ledger's on-disk format: its version, reading an older one through the upgrade chain, the
event lines. (tests/test_ledger.py reads a run that the format version 1 release wrote.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from jobs.errors import InputError
from ray_backfill.ledger import RunLedger, RunRecord, codec

V1 = Path(__file__).parent / "fixtures" / "ledger_v1"
V1_RUN = "20240105T120000Z-a1b2c3"


def test_todays_version_reads_and_any_other_is_refused():
    assert codec.LEDGER_VERSION == 1
    assert codec.upgrade({"version": 1, "a": 2}) == {"version": 1, "a": 2}
    for version in (None, 0, 2, 7, "1", 1.0, True):
        data = {"a": 2} if version is None else {"version": version}
        with pytest.raises(InputError, match=f"ledger version {version!r} is not 1; written by another release"):
            codec.upgrade(data)


def test_a_later_release_reads_a_version_1_run_through_its_upgrade(tmp_path, monkeypatch):
    """What the next format change does: raise LEDGER_VERSION and say how a version 1 record becomes
    a version 2 one; the run written by the version 1 release then reads, and is written as version 2."""
    def to_v2(data: dict) -> dict:
        return {**data, "stage_seconds": {**data["stage_seconds"], "upgraded": 1.0}}

    monkeypatch.setattr(codec, "LEDGER_VERSION", 2)
    monkeypatch.setattr(codec, "_UPGRADES", {1: to_v2})
    shutil.copytree(V1, tmp_path / "runs")
    ledger = RunLedger(tmp_path / "runs")
    record = ledger.load(V1_RUN)
    assert record.stage_seconds == {"upgraded": 1.0} and record.seq == 4
    ledger.save(record)
    assert json.loads(Path(ledger.path(V1_RUN)).read_text())["version"] == 2
    assert ledger.load(V1_RUN).to_json() == record.to_json()
    with pytest.raises(InputError, match=r"ledger version 3 is not 1\.\.2"):
        RunRecord.from_json({**record.to_json(), "version": 3})


def test_a_snapshot_is_a_json_object():
    assert codec.parse(codec.dump({"version": 1})) == {"version": 1}
    with pytest.raises(TypeError, match="not list"):
        codec.parse(b"[]")
    with pytest.raises(ValueError):
        codec.parse(b"{not json")


def test_event_lines_and_which_of_them_are_replayed():
    assert codec.event_line(3, {"task_id": "gold"}, heartbeat_at="t") == \
        b'{"heartbeat_at": "t", "seq": 3, "task": {"task_id": "gold"}}\n'
    assert codec.event_line(4, heartbeat_at="t") == b'{"heartbeat_at": "t", "seq": 4}\n'
    lines = [codec.event_line(s, heartbeat_at=str(s)) for s in (1, 2, 3, 2, 4)] + [b'{"seq": 5, "hea']
    # past the snapshot's seq (1), each past the one before; the torn last line is skipped
    assert [e["seq"] for e in codec.parse_events(lines, after=1)] == [2, 3, 4]
