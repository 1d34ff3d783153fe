"""Reading the tables without Spark: the README's table list and examples, `ray-backfill tables` and
`ray-backfill query`, checked against Spark's own figures on a small real warehouse.

The warehouse is built once for the module with the tests' Spark session: two bronze chunks of one
day (two snapshots), then silver and gold, for two locations of the synthetic source. The README's
Python examples run in a subprocess from the folder holding it, their catalog name set to this
warehouse's; the spark-sql example's settings are compared with what `catalog_conf` gives, and its
SQL runs in the shared session (a real spark-sql JVM would cost 10-20 s more).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from jobs import bronze, gold, silver
from jobs.config import CatalogConfig, PipelineConfig
from jobs.context import load_inputs
from jobs.dates import Chunk
from jobs.tables import (ALL_TABLES, DIM_LOCATION, DIM_TIME, FACT_DAILY, FACT_HOURLY, SILVER, ensure_tables,
                         tables_markdown)
from jobs.tasks import build_source
from ray_backfill import cli
from ray_backfill.jars import manifest_jars
from ray_backfill.sessions import catalog_conf
from tests.helpers import ROOT, attach_catalog, fresh_catalog, run_cli

KEYS = ("hanoi", "haiphong")
DAYS = (Chunk(dt.date(2024, 1, 14), dt.date(2024, 1, 15)), Chunk(dt.date(2024, 1, 15), dt.date(2024, 1, 16)))
README = ROOT / "README.md"


def _readme_examples() -> dict[str, str]:
    """The README's tested examples: fenced blocks right after `<!-- example: NAME -->`."""
    found = re.findall(r"^<!-- example: (\S+) -->\n```\w+\n(.*?)^```$", README.read_text(), re.MULTILINE | re.DOTALL)
    return dict(found)


def test_the_readme_lists_the_tables_as_the_specs_say():
    text = README.read_text()
    section = re.search(r"^<!-- tables:begin .*?-->\n(.*?)^<!-- tables:end -->$", text, re.MULTILINE | re.DOTALL)
    assert section, "README.md has no <!-- tables:begin --> ... <!-- tables:end --> block"
    assert section.group(1).rstrip("\n") == tables_markdown(), \
        "README's table list differs from the specs: paste `python -c 'from jobs.tables import tables_markdown as t; " \
        "print(t())'` between the markers"
    assert set(_readme_examples()) == {"cli", "pyiceberg", "duckdb", "pandas", "spark-sql"}


@pytest.mark.process
def test_a_missing_warehouse_is_one_line_and_is_left_missing(tmp_path):
    for args in (("tables",), ("query", "SELECT 1")):
        done = run_cli(*args, "--warehouse", str(tmp_path / "nowhere"))
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.splitlines() == [
            f"error: no lakehouse at {tmp_path / 'nowhere'}: {tmp_path / 'nowhere' / 'catalog.db'} does not exist "
            "(run a backfill first, or give --warehouse)"]
    assert not (tmp_path / "nowhere").exists()


@pytest.fixture(scope="module")
def lake(spark, spark_settings, tmp_path_factory):
    """(the folder holding `warehouse/`, its CatalogConfig): two bronze chunks, silver, gold."""
    root = tmp_path_factory.mktemp("reading")
    settings = fresh_catalog(spark, spark_settings, root, "reading")
    inputs = load_inputs(PipelineConfig(locations=KEYS))
    for day in DAYS:
        fetched = bronze.fetch_chunk(build_source(settings.source), day, inputs.locations, inputs.variables)
        bronze.write_chunk(spark, settings, fetched, inputs.location_keys, "reading")
    both = Chunk(DAYS[0].start, DAYS[-1].end)
    silver.run(spark, settings, both, inputs, "reading")
    gold.run(spark, settings, both, inputs, "reading")
    return root, settings.catalog


def _catalog_args(catalog: CatalogConfig) -> tuple[str, ...]:
    return "--warehouse", catalog.warehouse, "--catalog-name", catalog.name


def _per_location(spark, catalog, spec, *aggregates) -> dict[str, tuple]:
    df = spark.table(spec.qualified(catalog)).groupBy("location_key").agg(*aggregates)
    return {row[0]: tuple(row[1:]) for row in df.collect()}


@pytest.mark.spark
@pytest.mark.integration
@pytest.mark.parametrize("name", ["pyiceberg", "duckdb", "pandas"])
def test_the_readme_python_examples_read_the_tables(spark, lake, name):
    root, catalog = lake
    code = _readme_examples()[name]
    assert code.count('SqlCatalog("lh", uri="sqlite:///warehouse/catalog.db")') == 1
    code = code.replace('SqlCatalog("lh"', f'SqlCatalog("{catalog.name}"')
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [re.sub(r"[│|]", " ", line).split() for line in done.stdout.splitlines()]
    if name == "pyiceberg":
        days, worst = _per_location(spark, catalog, FACT_DAILY, F.count("*"), F.max("aqi_daily_max"))["hanoi"]
        assert "('gold', 'fact_city_daily')" in done.stdout
        assert f"hanoi: {days} days, worst daily AQI {worst}" in done.stdout
    elif name == "duckdb":
        want = _per_location(spark, catalog, FACT_HOURLY, F.count("*"), F.max("aqi"))
        for key, (hours, worst) in want.items():
            assert [key, str(hours), str(worst)] in [line[:3] for line in lines], done.stdout
    else:
        want = _per_location(spark, catalog, SILVER, F.max("aqi"))
        got = {line[0]: float(line[1]) for line in lines if len(line) == 2 and line[0] in KEYS}
        assert got == {key: float(worst) for key, (worst,) in want.items()}, done.stdout


def _shell_words(block: str, **variables: str) -> list[str]:
    """A README shell command as its words, continuation lines joined and `$NAME`s replaced."""
    text = block.replace("\\\n", " ")
    for name, value in variables.items():
        text = text.replace(f"${name}", value)
    return shlex.split(text)


@pytest.mark.spark
@pytest.mark.integration
def test_the_readme_spark_sql_example_has_the_runs_catalog_settings_and_its_sql_runs(spark, lake):
    root, catalog = lake
    block = _readme_examples()["spark-sql"]
    setup, command = block.split("\n", 1)
    assert setup == "J=~/.cache/ray-backfill/jars"
    words = _shell_words(command, J="JARS", PWD=str(root))
    assert words[0] == "spark-sql"
    options = list(zip(words[1::2], words[2::2]))
    conf = dict(value.split("=", 1) for flag, value in options if flag == "--conf")
    jars = [value for flag, value in options if flag == "--driver-class-path"][0].split(":")
    manifest = {Path(j).name for j in manifest_jars()}
    assert {Path(j).parent for j in jars} == {Path("JARS")}
    assert {Path(j).name for j in jars} == {n for n in manifest if not n.startswith("postgresql")}
    readme_catalog = CatalogConfig(name="lh", warehouse=str(root / "warehouse"))
    assert {k: v for k, v in conf.items() if k.startswith("spark.sql.catalog.")} == catalog_conf(readme_catalog)
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert conf["spark.sql.extensions"] == "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
    sql = dict(options)["-e"]
    assert sql.count("lh.gold.") == 1
    rows = spark.sql(sql.replace("lh.gold.", f"{catalog.name}.gold.")).collect()
    want = _per_location(spark, catalog, FACT_DAILY, F.count("*"), F.max("aqi_daily_max"))
    assert {row[0]: tuple(row[1:]) for row in rows} == want and [r[0] for r in rows] == sorted(want)


@pytest.mark.spark
@pytest.mark.integration
def test_the_readme_commands_run(spark, lake):
    root, catalog = lake
    script = 'set -e\nray-backfill() { "$PY" -m ray_backfill.cli "$@"; }\n' + _readme_examples()["cli"]
    env = {**os.environ, "PY": sys.executable, "PYTHONPATH": str(ROOT), "RAY_BACKFILL_WAREHOUSE": catalog.warehouse,
           "RAY_BACKFILL_CATALOG_NAME": catalog.name}
    done = subprocess.run(["bash", "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    locations = spark.table(DIM_LOCATION.qualified(catalog)).count()
    assert len((root / "locations.csv").read_text().splitlines()) == 1 + locations
    assert done.stdout.splitlines()[0].split() == ["table", "rows", "first", "last", "snapshots", "files", "size"]


def _spark_figures(spark, catalog) -> list[dict]:
    """What Spark says about every table: the figures `ray-backfill tables --json` gives."""
    names = [spec.qualified(catalog) for spec in ALL_TABLES]
    # one job for all snapshots, one for all data files: a job per table would cost seconds
    snapshots = spark.sql(" UNION ALL ".join(f"SELECT {i} AS t, count(*) FROM {n}.snapshots"
                                             for i, n in enumerate(names))).collect()
    files = spark.sql(" UNION ALL ".join(f"SELECT {i} AS t, count(*), coalesce(sum(file_size_in_bytes), 0) "
                                         f"FROM {n}.files WHERE content = 0" for i, n in enumerate(names))).collect()
    snapshots, files = dict(snapshots), {row[0]: tuple(row[1:]) for row in files}
    out = []
    for i, spec in enumerate(ALL_TABLES):
        figures = {"table": spec.full_name, "time_column": spec.time_column, "snapshots": snapshots[i],
                   "data_files": files[i][0], "bytes": files[i][1]}
        column = spec.time_column
        aggregates = [F.count(F.lit(1))]
        if column:
            timestamp = dict((f.name, f.type) for f in spec.fields)[column] == "TIMESTAMP"
            aggregates += [F.unix_seconds(agg(column)) if timestamp else agg(column).cast("string")
                           for agg in (F.min, F.max)]
        figures["rows"], *span = spark.table(names[i]).agg(*aggregates).first()
        if span:
            figures["first"], figures["last"] = span
        out.append(figures)
    return out


def _comparable(got: dict) -> dict:
    """`tables --json` row with its bounds as Spark gives them (epoch seconds, or the date)."""
    out = {k: v for k, v in got.items() if k != "metadata_location"}
    for key in ("first", "last"):
        value = out.pop(key)
        if value is not None:
            out[key] = int(dt.datetime.fromisoformat(value).timestamp()) if "T" in value else value
    return out


@pytest.mark.spark
@pytest.mark.integration
def test_tables_gives_spark_s_rows_spans_snapshots_and_files(spark, lake):
    _, catalog = lake
    done = run_cli("tables", "--json", *_catalog_args(catalog))
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert [_comparable(row) for row in got] == _spark_figures(spark, catalog)
    assert got[0]["snapshots"] == len(DAYS) and got[0]["rows"] == len(KEYS) * 24 * len(DAYS)
    for row in got:
        assert Path(row["metadata_location"].removeprefix("file:")).is_file()

    done = run_cli("tables", *_catalog_args(catalog))
    assert done.returncode == 0 and done.stderr == "", done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 + len(ALL_TABLES)
    for line, row in zip(lines[1:], got):
        words = line.split()
        assert words[:2] == [row["table"], f"{row['rows']:,}"]
        assert words[-4:-2] == [str(row["snapshots"]), str(row["data_files"])]
    bronze_line = lines[1].split()
    assert bronze_line[2:6] == ["2024-01-14", "00:00", "2024-01-15", "23:00"]


@pytest.mark.spark
@pytest.mark.integration
def test_query_answers_as_spark_does_in_every_format(spark, lake):
    _, catalog = lake
    sql = ("SELECT location_key, count(*) AS hours, max(aqi) AS worst, min(ts_utc) AS first_hour "
           "FROM gold.fact_air_quality_hourly GROUP BY location_key ORDER BY location_key")
    want = _per_location(spark, catalog, FACT_HOURLY, F.count("*"), F.max("aqi"))
    done = run_cli("query", "--format", "json", sql, *_catalog_args(catalog))
    assert done.returncode == 0 and done.stderr == "", done.stderr
    got = json.loads(done.stdout)
    assert {r["location_key"]: (r["hours"], r["worst"]) for r in got} == want
    assert [r["location_key"] for r in got] == sorted(want)
    assert {r["first_hour"] for r in got} == {"2024-01-14T00:00:00+00:00"}

    # plain table names, the default format, and a limit that leaves rows out
    done = run_cli("query", "--limit", "1", "SELECT location_key, hours FROM (SELECT location_key, count(*) AS hours "
                   "FROM fact_air_quality_hourly GROUP BY 1) ORDER BY 1", *_catalog_args(catalog))
    assert done.returncode == 0, done.stderr
    first = sorted(want)[0]
    assert [line.split() for line in done.stdout.splitlines()] == [["location_key", "hours"],
                                                                   [first, str(want[first][0])]]
    assert done.stderr.splitlines() == ["(the first 1 rows; --limit N for more, 0 for all)"]


@pytest.mark.spark
@pytest.mark.integration
@pytest.mark.parametrize("sql, message", [
    ("SELEC 1", 'error: query: Parser Error: syntax error at or near "SELEC"'),
    ("SELECT nope FROM gold.dim_time", 'error: query: Binder Error: Referenced column "nope" not found'),
    ("SELECT * FROM gold.no_such_table", "error: query: Catalog Error: Table with name no_such_table does not exist! "
                                         "Did you mean"),
    ("DELETE FROM gold.dim_time", "error: query: only SELECT statements run here, not DELETE"),
    ("COPY gold.dim_time TO 'x.csv'", "error: query: only SELECT statements run here, not COPY"),
    ("SELECT 1; SELECT 2", "error: query: give exactly one SQL statement, not 2"),
    ("SELECT * FROM read_csv('/etc/hostname')", "error: query: Permission Error: Cannot access file"),
])
def test_sql_that_fails_or_writes_is_one_line(lake, capsys, sql, message):
    _, catalog = lake
    assert cli.main(["query", sql, *_catalog_args(catalog)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith(message), err


@pytest.mark.spark
@pytest.mark.integration
def test_a_postgres_catalog_reads_the_same_and_its_password_never_shows(spark, postgres, tmp_path):
    catalog = attach_catalog(spark, tmp_path / "wh", "readpg", kind="postgres", uri=postgres.jdbc_uri,
                             user=postgres.user, password=postgres.password)
    ensure_tables(spark, catalog)
    spark.sql(f"INSERT INTO {DIM_TIME.qualified(catalog)} VALUES (0, '00:00', 0, 'night'), (100, '01:00', 1, 'night')")
    args = ("--catalog", "postgres", "--catalog-uri", postgres.jdbc_uri, "--catalog-user", postgres.user,
            "--catalog-name", catalog.name, "--warehouse", catalog.warehouse)
    env = {"RAY_BACKFILL_CATALOG_PASSWORD": postgres.password}
    tables = run_cli("tables", "--json", *args, env=env)
    assert tables.returncode == 0, tables.stderr
    assert {row["table"]: row["rows"] for row in json.loads(tables.stdout)} == {
        spec.full_name: 2 if spec is DIM_TIME else 0 for spec in ALL_TABLES}
    query = run_cli("query", "--format", "csv", "SELECT time_label FROM dim_time ORDER BY 1", *args, env=env)
    assert (query.returncode, query.stdout) == (0, "time_label\n00:00\n01:00\n"), query.stderr
    wrong = run_cli("tables", *args, env={"RAY_BACKFILL_CATALOG_PASSWORD": "not-" + postgres.password})
    assert wrong.returncode == 1 and len(wrong.stderr.splitlines()) == 1
    assert wrong.stderr.startswith(f"error: catalog {postgres.jdbc_uri} cannot be read: ")
    assert "password authentication failed" in wrong.stderr
    for done in (tables, query, wrong):
        assert postgres.password not in done.stdout + done.stderr
