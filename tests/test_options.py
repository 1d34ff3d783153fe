"""Settings from flags, RAY_BACKFILL_* variables and a TOML file fill one Settings; flags win."""

from __future__ import annotations

import argparse

import pytest

from jobs.config import settings_from_dict, settings_to_dict
from jobs.errors import ConfigError
from ray_backfill.options import add_options, resolve


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_options(parser)
    return parser.parse_args(argv)


def test_flag_beats_env_beats_file(tmp_path):
    config = tmp_path / "backfill.toml"
    config.write_text('warehouse = "/from/file"\nspark_mode = "local"\nlocations = "hanoi,hcmc"\nparallelism = 3\n')
    env = {"RAY_BACKFILL_WAREHOUSE": "/from/env", "RAY_BACKFILL_API_KEY": "s3cret"}
    settings, file_values = resolve(_args("--config", str(config)), env)
    assert settings.catalog.warehouse == "/from/env"
    assert settings.spark.mode == "local"
    assert settings.pipeline.locations == ("hanoi", "hcmc")
    assert settings.source.api_key == "s3cret"
    assert file_values["parallelism"] == 3
    settings, _ = resolve(_args("--config", str(config), "--warehouse", "/from/flag"), env)
    assert settings.catalog.warehouse == "/from/flag"


def test_secrets_are_not_flags_and_never_serialized():
    with pytest.raises(SystemExit):
        _args("--api-key", "x")
    settings, _ = resolve(_args(), {"RAY_BACKFILL_API_KEY": "s3cret", "RAY_BACKFILL_CATALOG_PASSWORD": "pw"})
    assert "s3cret" not in repr(settings) and "pw" not in repr(settings.catalog)
    data = settings_to_dict(settings)
    assert "s3cret" not in str(data)
    assert settings_from_dict(data, env={"RAY_BACKFILL_API_KEY": "s3cret"}).source.api_key == "s3cret"
    assert settings_to_dict(settings_from_dict(data, env={})) == data


@pytest.mark.parametrize("env, fragment", [
    ({"RAY_BACKFILL_SPARK_MODE": "yarn"}, "RAY_BACKFILL_SPARK_MODE 'yarn' is not one of raydp, local"),
    ({"RAY_BACKFILL_EXECUTOR_CORES": "two"}, "RAY_BACKFILL_EXECUTOR_CORES 'two' is not a valid value"),
    ({"RAY_BACKFILL_API_URL": "ftp://x"}, "api url 'ftp://x' is not an http(s) URL"),
    ({"RAY_BACKFILL_CATALOG": "postgres"}, "catalog kind 'postgres' needs a uri"),
    ({"RAY_BACKFILL_LEDGER_DIR": "hdfs://nn:8020/runs"}, "ledger_dir 'hdfs://nn:8020/runs' is not a path or an s3://"),
    ({"RAY_BACKFILL_LEDGER_DIR": "s3:///runs"}, "ledger_dir 's3:///runs' is not a path or an s3://bucket/"),
])
def test_bad_settings_name_their_origin(env, fragment):
    with pytest.raises(ConfigError) as err:
        resolve(_args(), env)
    assert fragment in str(err.value)


def test_unknown_key_in_config_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('warehose = "/typo"\n')
    with pytest.raises(ConfigError, match="unknown setting 'warehose'"):
        resolve(_args("--config", str(config)), {})


def test_ledger_dir_from_flag_env_or_file_is_recorded_with_the_run(tmp_path):
    config = tmp_path / "backfill.toml"
    config.write_text('ledger_dir = "s3://bucket/from-file"\n')
    assert resolve(_args(), {})[0].catalog.ledger_dir is None
    assert resolve(_args("--config", str(config)), {})[0].catalog.ledger_dir == "s3://bucket/from-file"
    env = {"RAY_BACKFILL_LEDGER_DIR": "/nfs/runs"}
    assert resolve(_args("--config", str(config)), env)[0].catalog.ledger_dir == "/nfs/runs"
    settings, _ = resolve(_args("--config", str(config), "--ledger-dir", "file:///nfs/flag"), env)
    assert settings.catalog.ledger_dir == "file:///nfs/flag"
    data = settings_to_dict(settings)
    assert settings_from_dict(data).catalog.ledger_dir == "file:///nfs/flag"
    del data["catalog"]["ledger_dir"]  # a run recorded before the setting existed
    assert settings_from_dict(data).catalog.ledger_dir is None
