"""The default mode end to end, on the multi-host catalog: one parallel Ray backfill with a fresh RayDP
session per chunk, committing to a real PostgreSQL server on 127.0.0.1; the sequential baseline
gives the same tables."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest

from jobs.config import CatalogConfig, Settings
from jobs.tables import ALL_TABLES, BRONZE, FACT_DAILY, SILVER
from ray_backfill.jars import manifest_jars
from ray_backfill.sessions import spark_conf
from tests.helpers import attach_catalog, checksums, disk_added, disk_snapshot, read_ledger, run_cli, run_cli_marked, run_id_from, wait_marked_gone

pytestmark = [pytest.mark.ray, pytest.mark.spark, pytest.mark.integration, pytest.mark.slow]

RANGE = ["--start-date", "2024-01-01", "--end-date", "2024-02-29"]  # two monthly chunks, 60 days
LOCS = ["--locations", "hanoi,hcmc,danang"]
NAME = "pgrun"


@dataclass
class PgRun:
    """What the module's one backfill left: its output, ledger folder, processes and logs."""

    warehouse: Path
    done: subprocess.CompletedProcess
    seen: dict[int, str]  # processes that carried the run's marker while it ran
    left: dict[int, str]  # ... and those alive 30 s after it ended
    ray_tmp: Path  # the run's Ray session folder: logs of the driver, the actors and the chunks
    added: dict[str, int]  # bytes each file added outside the warehouse while the run went on, after it ended


# Where a run may leave files outside its warehouse: the system temp folder (Ray's temp root and
# /tmp/ray, where Ray's Java runtime extracts its native library, are under it) and the user's caches.
FOOTPRINT_ROOTS = [Path(tempfile.gettempdir()), Path.home() / ".cache"]


def footprint_skip(warehouse: Path, postgres) -> list[Path]:
    """What the footprint leaves out: the warehouse (the run's data, its ledger and attempt logs),
    the PostgreSQL server's own folder, and the set-up caches written once per machine, not per run
    (the JVM jars and the class-data archives of ray_backfill/cds.py, keyed by the jar set)."""
    return [warehouse, Path(postgres.home), Path.home() / ".cache" / "ray-backfill"]


@pytest.fixture(scope="module")
def pg_run(postgres, tmp_path_factory):
    """One parallel RayDP backfill (the default mode) whose catalog is the PostgreSQL server; password only in
    the environment."""
    warehouse = tmp_path_factory.mktemp("pg-run") / "wh"
    marker = uuid.uuid4().hex
    # The run's own Ray (and so every log of its chunks and Spark sessions) under a folder of its own;
    # short, for Ray's 107-byte socket paths.
    ray_tmp = Path(f"/tmp/rbf-pgray-{marker[:8]}")
    before = disk_snapshot(FOOTPRINT_ROOTS, skip=footprint_skip(warehouse, postgres))
    done, seen = run_cli_marked(
        "run", *RANGE, *LOCS, "--warehouse", str(warehouse), "--executor", "ray", "--parallelism", "2",
        "--catalog", "postgres", "--catalog-uri", postgres.jdbc_uri, "--catalog-user", postgres.user,
        "--catalog-name", NAME,
        marker=marker, env={"RAY_BACKFILL_CATALOG_PASSWORD": postgres.password, "RAY_TMPDIR": str(ray_tmp)},
    )
    left = wait_marked_gone(marker, timeout=30)
    added = disk_added(before, disk_snapshot(FOOTPRINT_ROOTS, skip=footprint_skip(warehouse, postgres)))
    yield PgRun(warehouse, done, seen, left, ray_tmp, added)
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_parallel_backfill_commits_every_table_to_the_postgres_catalog(pg_run, postgres, spark):
    warehouse, done = pg_run.warehouse, pg_run.done
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_id = run_id_from(done.stdout)
    ledger = read_ledger(warehouse, run_id)
    assert ledger["outcome"] == "succeeded"
    tasks = {t["task_id"]: t for t in ledger["tasks"]}
    assert sorted(tasks) == ["bronze-2024-01", "bronze-2024-02", "gold", "prepare", "silver"]
    assert all(t["status"] == "succeeded" and t["attempts"] == 1 and t["node_id"] for t in tasks.values())
    assert all(t["peak_rss_mb"] and t["peak_rss_mb"] > 100 for t in tasks.values())
    assert ledger["request"]["settings"]["catalog"]["kind"] == "postgres"
    assert ledger["request"]["settings"]["spark"]["mode"] == "raydp"
    assert f"tables:  catalog '{NAME}' (postgres: {postgres.jdbc_uri})" in done.stdout
    assert "succeeded" in done.stdout and "resume" not in done.stdout
    report = json.loads((warehouse / "_ray_backfill" / "runs" / run_id / "report.json").read_text())
    assert {"bronze", "silver", "gold", "total"} <= set(report["stage_seconds"])
    page = warehouse / "_ray_backfill" / "runs" / run_id / "report.html"
    assert f"  report:  {page}" in done.stdout and all(f'data-task="{t}"' in page.read_text() for t in tasks)  # a bar each

    registered = postgres.psql(
        f"SELECT table_namespace || '.' || table_name FROM iceberg_tables WHERE catalog_name = '{NAME}'")
    assert sorted(registered.split()) == sorted(f"{t.namespace}.{t.name}" for t in ALL_TABLES)
    # every table's current metadata file is in the warehouse the run was given
    locations = postgres.psql(f"SELECT metadata_location FROM iceberg_tables WHERE catalog_name = '{NAME}'")
    assert all(urlparse(loc).path.startswith(f"{warehouse}/") for loc in locations.split()), locations

    catalog = attach_catalog(spark, warehouse, NAME, kind="postgres", uri=postgres.jdbc_uri, user=postgres.user,
                             password=postgres.password)
    bronze = spark.table(BRONZE.qualified(catalog))
    hours = 3 * 60 * 24  # 3 locations x 60 days
    assert bronze.count() == sum(tasks[f"bronze-2024-0{m}"]["rows"] for m in (1, 2))
    assert bronze.count() == hours  # every hour once: bronze refuses an answer with gaps or repeats
    bronze_keys = bronze.select("location_key", "ts_utc").distinct().count()
    silver = spark.table(SILVER.qualified(catalog))
    assert silver.count() == silver.select("location_key", "ts_utc").distinct().count() == bronze_keys
    assert silver.count() > 0.98 * hours
    assert spark.table(FACT_DAILY.qualified(catalog)).count() == 3 * 60
    assert bronze.select("_chunk_id").distinct().count() == 2
    # one commit per chunk, each its own snapshot: the parallel writers did not lose a commit
    assert spark.sql(f"SELECT count(*) FROM {BRONZE.qualified(catalog)}.snapshots").first()[0] == 2


# what a healthy run must not print: the JVMs', Spark's, py4j's and Ray's own chatter
NOISE = re.compile(r"WARN|ERROR|Warning|Exception|Traceback|py4j|raylet|GcsClient|SlotSupervisor pid|CDS")


def test_the_console_shows_the_run_only_and_each_attempt_has_its_own_log(pg_run):
    done = pg_run.done
    assert done.returncode == 0
    printed = (done.stdout + done.stderr).splitlines()
    assert not [line for line in printed if NOISE.search(line)], printed
    assert len(printed) <= 40, printed
    run_id = run_id_from(done.stdout)
    logs = pg_run.warehouse / "_ray_backfill" / "runs" / run_id / "logs"
    assert f"  logs:    {logs} (one file per attempt)" in printed
    raydp = []
    for task in read_ledger(pg_run.warehouse, run_id)["tasks"]:
        path = Path(task["metrics"]["log"])
        assert path == logs / f"{task['task_id']}.attempt{task['attempts']}.log"
        text = path.read_text()
        # its header, its own Python logging, and the JVM's console (Spark's log4j says where it logs)
        assert text.startswith(f"# ray-backfill run {run_id}, {task['task_id']} attempt 1"), text[:300]
        assert f"spark session {task['task_id']} (" in text, text[-2000:]
        assert "Setting default log level" in text, text[-2000:]
        if f"spark session {task['task_id']} (raydp)" in text:
            raydp.append(task["task_id"])
            # its executors' work folder in Ray's session went with the attempt, not with the run
            assert re.search(r"^# removed its Spark application's work folder app-\d+ on this node$", text, re.M), \
                text[-2000:]
    assert {"bronze-2024-01", "bronze-2024-02", "silver", "gold"} <= set(raydp), raydp
    status = run_cli("status", run_id, "--warehouse", str(pg_run.warehouse))
    assert status.returncode == 0, status.stderr
    assert f"logs: {logs} (one file per attempt: <task>.attempt<N>.log)" in status.stdout


def test_the_sequential_baseline_gives_identical_tables(pg_run, postgres, spark, tmp_path):
    assert pg_run.done.returncode == 0
    seq_wh = tmp_path / "seq"
    seq = run_cli("run", *RANGE, *LOCS, "--warehouse", str(seq_wh), "--executor", "sequential",
                  "--spark-mode", "local", "--catalog-name", "seqrun")
    assert seq.returncode == 0, seq.stdout[-3000:] + seq.stderr[-3000:]
    # its one session lives in the driver: the JVM's output goes to the run's session.log, not the console
    assert not [line for line in (seq.stdout + seq.stderr).splitlines() if NOISE.search(line)], seq.stdout + seq.stderr
    session_log = seq_wh / "_ray_backfill" / "runs" / run_id_from(seq.stdout) / "logs" / "session.log"
    assert "Setting default log level" in session_log.read_text()
    ray_sums = checksums(spark, attach_catalog(spark, pg_run.warehouse, NAME, kind="postgres", uri=postgres.jdbc_uri,
                                               user=postgres.user, password=postgres.password))
    seq_sums = checksums(spark, attach_catalog(spark, seq_wh, "seqrun"))
    assert ray_sums == seq_sums
    assert int(ray_sums["air_quality_hourly_clean"].split(":")[0]) > 3 * 60 * 24 * 0.98


def test_the_password_is_in_no_output_ledger_report_log_or_command_line(pg_run, postgres):
    warehouse, done = pg_run.warehouse, pg_run.done
    assert done.returncode == 0
    # every process of the run, sampled each second while it ran: the JVMs pyspark and RayDP start
    # take their settings as `--conf k=v` arguments, which `ps` shows every user
    assert len(pg_run.seen) > 10 and any("java" in cmd for cmd in pg_run.seen.values())
    assert not [cmd for cmd in pg_run.seen.values() if postgres.password in cmd]
    assert postgres.password not in done.stdout + done.stderr
    logs = [p for p in pg_run.ray_tmp.rglob("*") if p.is_file() and p.suffix in (".out", ".err", ".log")]
    # a finished attempt's Ray log files go (ray_backfill/logs.py); the last supervisor's stay till the next
    assert any("[gold] attempt 1 starting" in p.read_text(errors="replace") for p in logs), "the chunks' logs are not there"
    for path in logs:  # Ray's, the supervisors' and the chunk processes' (their Spark drivers' too)
        assert postgres.password not in path.read_text(errors="replace"), path
    run_dir = warehouse / "_ray_backfill" / "runs" / run_id_from(done.stdout)
    assert {p.name for p in run_dir.iterdir()} >= {"ledger.json", "report.json"}
    for path in warehouse.rglob("*"):  # ledger, report, and every Iceberg data and metadata file
        if path.is_file():
            assert postgres.password.encode() not in path.read_bytes(), path
    report = json.loads((run_dir / "report.json").read_text())
    assert "settings" not in report["request"]
    assert read_ledger(warehouse, run_dir.name)["request"]["settings"]["catalog"]["password"] is None


def test_no_process_of_the_run_is_left(pg_run):
    seen, left = pg_run.seen, pg_run.left
    assert pg_run.done.returncode == 0
    # the marker reached the JVMs (Spark drivers, RayDP's Java workers) and the chunk processes ...
    assert any("java" in cmd.split(" ")[0] for cmd in seen.values()), sorted(seen.values())
    assert any("ray_backfill.worker" in cmd for cmd in seen.values())
    # RayDP's master ran in each chunk's own process: its gateway JVM, but no RayDPSparkMaster actor
    assert any("AppMasterEntryPoint" in cmd for cmd in seen.values()), sorted(seen.values())
    assert not [cmd for cmd in seen.values() if "RayDPSparkMaster" in cmd]
    # ... and none of them outlived the run
    assert not left, left


MiB = 1024 * 1024


def test_the_run_leaves_nothing_on_disk_outside_its_warehouse(pg_run):
    """A finished run leaves at most 1 MiB per task outside the warehouse, Ray's logs aside (which
    must hold no file of a chunk's processes), and no native-library copy or application folder."""
    assert pg_run.done.returncode == 0
    tasks = len(read_ledger(pg_run.warehouse, run_id_from(pg_run.done.stdout))["tasks"])
    ray_logs = {p: n for p, n in pg_run.added.items() if re.search(r"/session_[^/]+/logs/", p)}
    rest = {p: n for p, n in pg_run.added.items() if p not in ray_logs}
    biggest = sorted(rest.items(), key=lambda kv: -kv[1])[:10]
    by_folder: dict[str, int] = {}
    for path, n in rest.items():
        folder = "/".join(path.split("/")[:4])
        by_folder[folder] = by_folder.get(folder, 0) + n
    assert sum(rest.values()) <= tasks * MiB, (sorted(by_folder.items(), key=lambda kv: -kv[1])[:10], biggest)
    # what used to stay: Ray's native library per gateway (~40 MB), each application's jars (~59 MB)
    assert not [p for p in rest if p.endswith("libcore_worker_library_java.so")], biggest
    assert not list(pg_run.ray_tmp.glob("session_*/app-*")), list(pg_run.ray_tmp.glob("session_*/app-*"))
    assert not [p for p in rest if re.search(r"/(liblz4-java-|libzstd-jni-|snappy-)", p)], biggest
    # Ray's log files of the chunks' processes (chunk drivers, gateways, RayDP's Java workers) are gone
    chunk_files = [p for p in ray_logs if re.search(r"/(java-core-driver-|java-worker-|raydp-java-worker-|slf4j-)", p)]
    assert not chunk_files, chunk_files
    assert sum(ray_logs.values()) <= tasks * MiB, sorted(ray_logs.items(), key=lambda kv: -kv[1])[:10]


def test_the_postgres_jdbc_driver_is_on_every_session_classpath(spark, tmp_path):
    jar = next(j for j in manifest_jars() if Path(j).name.startswith("postgresql-"))
    conf = spark_conf(Settings(catalog=CatalogConfig(warehouse=str(tmp_path))), manifest_jars())
    assert jar in conf["spark.driver.extraClassPath"].split(":")
    # not `spark.jars`: each executor would copy every jar into its application's folder (docs/operations.md#disk)
    assert "spark.jars" not in conf
    # the JDBC catalog opens connections through DriverManager: the class must be on the JVM's own classpath
    jvm = spark.sparkContext._jvm
    driver = jvm.java.lang.Class.forName("org.postgresql.Driver", True, jvm.java.lang.ClassLoader.getSystemClassLoader())
    assert driver.getName() == "org.postgresql.Driver"
