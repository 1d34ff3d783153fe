"""The command line a user types: one-line flag errors, `status --json/--watch`, `cancel`, log levels.

A real driver process runs the real runner and ledger on the in-memory executor (no Spark).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from ray_backfill.cli import main
from ray_backfill.ledger import RunLedger
from tests.helpers import CLI, ROOT
from tests.test_driver_safety import _live_driver


@pytest.mark.parametrize("argv, fragments", [
    (["run", "--start-date", "2024-01-01", "--end-date", "2024-01-31", "--chunk", "fortnightly"],
     ["argument --chunk: invalid choice: 'fortnightly'", "'monthly'", "see `ray-backfill run --help`"]),
    (["run", "--start-date", "2024-01-01", "--end-date", "2024-01-31", "--parallelism", "two"],
     ["argument --parallelism: invalid int value: 'two'"]),
    (["status", "--interval", "x"], ["argument --interval"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'", "see `ray-backfill --help`"]),
])
def test_a_bad_flag_is_one_line_naming_it_and_pointing_to_help(argv, fragments, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    err = capsys.readouterr().err
    assert caught.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ray-backfill"), err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.process
def test_status_json_has_stable_keys_for_one_run_and_the_list(tmp_path, capsys):
    warehouse, run_id = tmp_path / "wh", "20240301T000000Z-0a0b0c"
    proc = _live_driver(warehouse, run_id)
    try:
        assert main(["status", run_id, "--json", "--warehouse", str(warehouse)]) == 0
        one = json.loads(capsys.readouterr().out)
        assert one["run_id"] == run_id and one["state"] == "running" and one["outcome"] is None
        assert {"tasks", "request", "heartbeat_at", "driver", "state_line", "created_at"} <= set(one)
        assert one["driver"]["pid"] == proc.pid
        assert main(["status", "--json", "--warehouse", str(warehouse)]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert listed["runs"] == [{"run_id": run_id, "state": "running", "outcome": None,
                                   "start_date": "2024-01-01", "end_date": "2024-02-29",
                                   "created_at": one["created_at"], "finished_at": None,
                                   "tasks": {"running": 1, "pending": 4}}]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()


@pytest.mark.process
def test_cancel_stops_a_live_driver_like_ctrl_c_and_watch_follows_it_to_the_end(tmp_path, capsys):
    warehouse, run_id = tmp_path / "wh", "20240301T000000Z-0d0e0f"
    proc = _live_driver(warehouse, run_id)
    watch = subprocess.Popen([*CLI, "status", run_id, "--watch", "--interval", "0.2", "--warehouse", str(warehouse)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = watch.stdout.readline()  # the watch is up and has shown the running run
        assert first.startswith(f"run {run_id}: running"), first
        assert main(["cancel", run_id, "--warehouse", str(warehouse), "--wait", "60"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].startswith(f"run {run_id}: cancel requested (running (pid {proc.pid}")
        assert out[-1] == f"run {run_id} cancelled"
        assert proc.wait(timeout=30) != 0  # the driver's own Ctrl-C path ran: KeyboardInterrupt
        watched, _ = watch.communicate(timeout=60)
    finally:
        for p in (proc, watch):
            if p.poll() is None:
                p.kill()
        proc.stderr.close()
    record = RunLedger.for_warehouse(warehouse).load(run_id)
    assert record.outcome == "cancelled" and {t.status.value for t in record.tasks} == {"cancelled"}
    assert watch.returncode == 0
    assert f"run {run_id}: cancelled" in watched  # it refreshed until the end
    assert main(["cancel", run_id, "--warehouse", str(warehouse)]) == 0
    assert capsys.readouterr().out == f"run {run_id} already ended: cancelled\n"


@pytest.mark.process
def test_cancel_records_a_run_whose_driver_is_lost_as_cancelled(tmp_path, capsys):
    warehouse, run_id = tmp_path / "wh", "20240301T000000Z-1a1b1c"
    proc = _live_driver(warehouse, run_id)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert main(["cancel", run_id, "--warehouse", str(warehouse)]) == 0
    assert capsys.readouterr().out.startswith(f"run {run_id}: driver lost (pid {proc.pid}")
    record = RunLedger.for_warehouse(warehouse).load(run_id)
    assert record.outcome == "cancelled" and record.task("prepare").status.value == "cancelled"


@pytest.mark.process
@pytest.mark.parametrize("flags, shown", [([], False), (["-v"], True), (["--log-level", "info"], True),
                                          (["status", "-v"], True)])
def test_the_driver_log_level(flags, shown, tmp_path):
    code = ("import logging, sys\nfrom ray_backfill.cli import main\n"
            "main(sys.argv[1:])\nlogging.getLogger('ray_backfill.probe').info('probe line')\n")
    argv = flags if flags[:1] == ["status"] else [*flags, "status"]
    done = subprocess.run([sys.executable, "-c", code, *argv, "--warehouse", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert ("probe line" in done.stderr) is shown


# --- every run setting from flags, environment and file alike; resume overrides how it runs --------


def _request(argv, monkeypatch, env=None):
    from ray_backfill.cli import _parser
    from ray_backfill.request import build_request

    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    return build_request(_parser().parse_args(["run", "--start-date", "2024-01-01", "--end-date", "2024-03-31",
                                               *argv]))


def test_run_settings_come_from_flags_then_environment_then_file(tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text('parallelism = 4\nchunk = "daily"\nretries = 5\nskip_silver = true\nexecutor = "sequential"\n')
    env = {"RAY_BACKFILL_PARALLELISM": "3", "RAY_BACKFILL_CHUNK": "weekly", "RAY_BACKFILL_SKIP_GOLD": "yes",
           "RAY_BACKFILL_CHUNK_TIMEOUT": "90", "RAY_BACKFILL_ADDRESS": "10.0.0.1:6379", "RAY_BACKFILL_STANDBY": "0"}
    request = _request(["--config", str(config), "--parallelism", "2"], monkeypatch, env)
    assert request.parallelism == 2  # the flag
    assert request.granularity == "weekly" and request.chunk_timeout_s == 90.0  # the environment
    assert request.address == "10.0.0.1:6379" and request.standby == 0
    assert request.skip == frozenset({"silver", "gold"})  # file and environment
    assert request.retries == 5 and request.executor == "sequential"  # the file


@pytest.mark.parametrize("env, message", [
    ({"RAY_BACKFILL_CHUNK": "fortnightly"}, "RAY_BACKFILL_CHUNK 'fortnightly' is not one of monthly, weekly, daily"),
    ({"RAY_BACKFILL_PARALLELISM": "lots"}, "RAY_BACKFILL_PARALLELISM 'lots' is not a valid value"),
    ({"RAY_BACKFILL_SKIP_SILVER": "maybe"}, "RAY_BACKFILL_SKIP_SILVER 'maybe' is not one of true, false"),
    ({"RAY_BACKFILL_EXECUTOR": "dask"}, "RAY_BACKFILL_EXECUTOR 'dask' is not one of ray, sequential"),
])
def test_a_bad_setting_from_the_environment_is_one_line_naming_the_variable(env, message, monkeypatch, capsys,
                                                                              tmp_path):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["plan", "--start-date", "2024-01-01", "--end-date", "2024-01-31",
                 "--warehouse", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_resume_may_change_how_a_run_runs_not_what_it_writes(tmp_path, monkeypatch, capsys):
    from ray_backfill.cli import _parser
    from ray_backfill.ledger import RunLedger
    from ray_backfill.plan import new_record
    from ray_backfill.request import resume_request

    request = _request(["--warehouse", str(tmp_path / "wh"), "--retries", "1", "--chunk", "weekly"], monkeypatch)
    ledger = RunLedger.for_warehouse(tmp_path / "wh")
    record = new_record(request)
    ledger.save(record)
    args = _parser().parse_args(["resume", request.run_id, "--warehouse", str(tmp_path / "wh"),
                                 "--parallelism", "5", "--chunk-timeout", "30"])
    resumed = resume_request(record, args)
    assert (resumed.parallelism, resumed.chunk_timeout_s, resumed.retries) == (5, 30.0, 1)
    assert resumed.granularity == "weekly" and resumed.date_range == request.date_range
    assert resumed.settings == request.settings and resumed.run_id == request.run_id
    with pytest.raises(SystemExit):  # not a resume flag: one line, from argparse
        main(["resume", request.run_id, "--warehouse", str(tmp_path / "wh"), "--chunk", "daily"])
    assert "unrecognized arguments: --chunk daily" in capsys.readouterr().err
    config = tmp_path / "c.toml"
    config.write_text('chunk = "daily"\n')
    assert main(["resume", request.run_id, "--warehouse", str(tmp_path / "wh"), "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: resume keeps what run {request.run_id} writes: 'chunk' in --config cannot change")
