"""Bad input: one line on stderr naming the input and the problem, exit 1, nothing written."""

from __future__ import annotations

import pytest

from ray_backfill.cli import main as cli_main


def _call(entry, argv, capsys):
    code = entry(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.fixture
def warehouse(tmp_path):
    return tmp_path / "wh"


def _good(warehouse, *extra):
    return ["--start-date", "2024-01-01", "--end-date", "2024-01-31", "--warehouse", str(warehouse),
            "--spark-mode", "local", *extra]


def _lines(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


GOOD_LOC = '{"location_key": "hanoi", "location_name": "Hanoi", "latitude": 21.0, "longitude": 105.8, "timezone": "Asia/Ho_Chi_Minh"}'


@pytest.mark.parametrize("entry", [lambda a: cli_main(["run", *a]), lambda a: cli_main(["stage", "bronze", *a])],
                         ids=["ray-backfill run", "ray-backfill stage bronze"])
@pytest.mark.parametrize(
    "case, argv_fn, expect",
    [
        ("end before start",
         lambda wh, tmp: ["--start-date", "2024-02-01", "--end-date", "2024-01-01", "--warehouse", str(wh)],
         ["--end-date 2024-01-01", "before", "--start-date 2024-02-01"]),
        ("malformed date",
         lambda wh, tmp: ["--start-date", "2024-13-01", "--end-date", "2024-12-31", "--warehouse", str(wh)],
         ["--start-date", "'2024-13-01'", "YYYY-MM-DD"]),
        ("broken locations line",
         lambda wh, tmp: _good(wh, "--locations-file", _lines(tmp, "loc.jsonl", [GOOD_LOC, '{"location_key": "x",'])),
         ["loc.jsonl:2"]),
        ("duplicate location key",
         lambda wh, tmp: _good(wh, "--locations-file", _lines(tmp, "dup.jsonl", [GOOD_LOC, GOOD_LOC])),
         ["dup.jsonl:2", "hanoi"]),
        ("unknown pollutant",
         lambda wh, tmp: _good(wh, "--pollutants", "pm25,radon"),
         ["radon"]),
        ("unknown location",
         lambda wh, tmp: _good(wh, "--locations", "hanoi,atlantis"),
         ["atlantis"]),
        ("unreachable warehouse",
         lambda wh, tmp: ["--start-date", "2024-01-01", "--end-date", "2024-01-02", "--spark-mode", "local",
                          "--warehouse", str(_lines(tmp, "afile", ["x"])) + "/wh"],
         ["warehouse", "afile/wh"]),
    ],
)
def test_bad_input_is_one_line_and_exit_1(entry, case, argv_fn, expect, warehouse, tmp_path, capsys):
    code, err = _call(entry, argv_fn(warehouse, tmp_path), capsys)
    assert code == 1
    assert err.startswith("error: ") and "\n" not in err, err
    for fragment in expect:
        assert fragment in err, (case, err)
    assert not warehouse.exists() or not any(warehouse.iterdir()), "nothing may be written"


def test_hadoop_catalog_on_local_fs_with_several_writers_is_refused(tmp_path):
    from jobs.config import CatalogConfig
    from jobs.errors import ConfigError
    from ray_backfill.sessions import check_writers

    catalog = CatalogConfig(kind="hadoop", warehouse=str(tmp_path))
    check_writers(catalog, 1)
    with pytest.raises(ConfigError, match="loses commits.*use the sqlite or postgres"):
        check_writers(catalog, 2)
    check_writers(CatalogConfig(kind="hadoop", warehouse="hdfs://namenode:8020/warehouse/iceberg"), 8)


@pytest.mark.parametrize(
    "kind, uri, warehouse, hosts, refused",
    [
        ("sqlite", None, "/data/wh", [], False),                                        # no cluster info
        ("sqlite", None, "/data/wh", ["10.0.0.1"], False),                              # one node
        ("sqlite", None, "/data/wh", ["10.0.0.1", "10.0.0.1", "10.0.0.1"], False),      # nodes sharing a host
        ("sqlite", None, "/data/wh", ["10.0.0.1", "10.0.0.2"], True),                   # the catalog is a file
        ("sqlite", None, "hdfs://nn:8020/wh", ["10.0.0.1", "10.0.0.2"], True),
        ("postgres", "jdbc:postgresql://db:5432/lh", "/data/wh", ["10.0.0.1", "10.0.0.2"], True),  # local path
        ("postgres", "jdbc:postgresql://db:5432/lh", "file:///data/wh", ["10.0.0.1", "10.0.0.2"], True),
        ("postgres", "jdbc:postgresql://db:5432/lh", "hdfs://nn:8020/wh", ["10.0.0.1", "10.0.0.2"], False),
        ("postgres", "jdbc:postgresql://db:5432/lh", "s3a://bucket/wh", ["10.0.0.1", "10.0.0.2", "10.0.0.3"], False),
        ("rest", "http://catalog:8181", "s3a://bucket/wh", ["10.0.0.1", "10.0.0.2"], False),
        ("rest", "http://catalog:8181", "/data/wh", ["10.0.0.1", "10.0.0.2"], True),
        ("hadoop", None, "hdfs://nn:8020/wh", ["10.0.0.1", "10.0.0.2"], False),
    ],
)
def test_catalogs_one_host_cannot_share_are_refused_on_a_multi_host_cluster(kind, uri, warehouse, hosts, refused):
    from jobs.config import CatalogConfig
    from jobs.errors import ConfigError
    from ray_backfill.sessions import check_cluster_catalog

    catalog = CatalogConfig(kind=kind, uri=uri, warehouse=warehouse)
    if not refused:
        check_cluster_catalog(catalog, hosts)
        return
    with pytest.raises(ConfigError) as caught:
        check_cluster_catalog(catalog, hosts)
    message = str(caught.value)
    assert "\n" not in message
    assert f"spans {len(set(hosts))} hosts" in message and "10.0.0.2" in message
    assert "--catalog postgres" in message and "hdfs:// or s3a://" in message
    if kind == "sqlite":
        assert "sqlite catalog" in message
    if not warehouse.startswith(("hdfs:", "s3a:")):
        assert f"local warehouse path {warehouse}" in message
