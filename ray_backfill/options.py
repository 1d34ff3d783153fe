"""Settings from command-line flags, RAY_BACKFILL_* environment variables and a TOML file.

Precedence: flag > environment variable > config file > built-in default. Every source fills
the same `Settings`, so validation and error messages are the same whichever was used.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Mapping
from urllib.parse import urlparse

from jobs.config import (
    CATALOG_KINDS,
    SOURCE_KINDS,
    SPARK_MODES,
    CatalogConfig,
    PipelineConfig,
    Settings,
    SourceConfig,
    SparkConfig,
)
from jobs.errors import ConfigError
from jobs.limits import PROFILES

ENV_PREFIX = "RAY_BACKFILL_"


def _csv(value: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in str(value).split(",") if v.strip())
    if not items:
        raise ValueError("empty list")
    return items


def _int(value: Any) -> int:
    return int(value)


def _float(value: Any) -> float:
    return float(value)


@dataclass(frozen=True)
class Option:
    """One setting: its flag, where it lands in Settings, how to parse it."""

    flag: str
    section: str
    field: str
    help: str
    parse: Callable[[Any], Any] = str
    choices: tuple[str, ...] | None = None
    secret: bool = False  # read from env/file only: a flag would show in `ps`

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


OPTIONS: tuple[Option, ...] = (
    Option("--warehouse", "catalog", "warehouse", "warehouse root: a path or hdfs://, s3a:// URI (default ./warehouse)"),
    Option("--ledger-dir", "catalog", "ledger_dir",
           "where run ledgers live: a path all nodes share or an s3:// URI "
           "(default <warehouse>/_ray_backfill/runs; required for an hdfs:// warehouse)"),
    Option("--catalog", "catalog", "kind", "Iceberg catalog: sqlite (default), postgres, hadoop, rest",
           choices=CATALOG_KINDS),
    Option("--catalog-uri", "catalog", "uri", "JDBC URL (postgres) or REST endpoint (rest)"),
    Option("--catalog-name", "catalog", "name", "Spark catalog name (default lh)"),
    Option("--catalog-user", "catalog", "user", "catalog user (postgres, rest)"),
    Option("--catalog-password", "catalog", "password", "catalog password", secret=True),
    Option("--spark-mode", "spark", "mode", "raydp (default): Spark on Ray actors; local: local[N] in one JVM",
           choices=SPARK_MODES),
    Option("--executor-cores", "spark", "executor_cores", "cores per Spark executor (default 1)", _int),
    Option("--executor-memory", "spark", "executor_memory", "memory per Spark executor (default 768m)"),
    Option("--source", "source", "kind", "synthetic (default, offline) or open-meteo",
           choices=SOURCE_KINDS),
    Option("--api-url", "source", "api_url", "Open-Meteo base URL"),
    Option("--api-key", "source", "api_key", "Open-Meteo API key", secret=True),
    Option("--api-timeout", "source", "timeout_s", "seconds per Open-Meteo request (default 60)", _float),
    Option("--source-profile", "source", "profile",
           "source limits shared by all chunks: free (default: 600 calls/min, 1 in flight), commercial "
           "(with an API key), self-hosted, unlimited",
           choices=tuple(PROFILES)),
    Option("--calls-per-minute", "source", "calls_per_minute", "override the profile's weighted calls per minute",
           _float),
    Option("--max-in-flight", "source", "max_in_flight", "override the profile's requests in flight", _int),
    Option("--batch-size", "source", "batch_size", "locations per Open-Meteo request (default 1)", _int),
    Option("--source-concurrency", "source", "concurrency",
           "requests one chunk keeps open (default: the in-flight limit, at most 8)", _int),
    Option("--locations", "pipeline", "locations", "comma-separated location keys (default: all in the file)", _csv),
    Option("--locations-file", "pipeline", "locations_file", "locations JSON Lines file", Path),
    Option("--pollutants", "pipeline", "pollutants", "comma-separated pollutant codes (default: all)", _csv),
    Option("--pollutants-file", "pipeline", "pollutants_file", "pollutants JSON Lines file", Path),
)
# The flags that find the run ledgers, all `status` and `resume` take besides --config.
LEDGER_FLAGS = ("--warehouse", "--ledger-dir")


def add_options(parser: argparse.ArgumentParser, only: Collection[str] | None = None) -> None:
    """Add the settings flags (and --config) to a parser; defaults stay None to see what was set.

    `only` names the flags to add, e.g. LEDGER_FLAGS; env vars and the file still fill every setting.
    """
    group = parser.add_argument_group("settings (also RAY_BACKFILL_<NAME> env vars or --config file)")
    group.add_argument("--config", type=Path, default=None, help="TOML file with these settings (flag names, _ for -)")
    for opt in OPTIONS:
        if opt.secret or (only is not None and opt.flag not in only):
            continue
        group.add_argument(opt.flag, dest=opt.dest, default=None, choices=opt.choices, help=opt.help)


def _read_config_file(path: Path | None) -> Mapping[str, Any]:
    if path is None:
        return {}
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None
    known = {opt.dest for opt in OPTIONS} | set(EXTRA_FILE_KEYS) | set(FILE_TABLES)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"--config {path}: unknown setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return data


# Keys a config file may hold besides the OPTIONS (read by the CLI for its own flags).
EXTRA_FILE_KEYS = ("parallelism", "standby", "chunk", "retries", "chunk_timeout", "address", "executor",
                   "skip_bronze", "skip_silver", "skip_gold", "maintain")
# Tables only a config file can hold: [catalog_properties] (Iceberg catalog properties, e.g.
# io-impl) and [spark_conf] (extra spark.* settings), each mapped onto a tuple of (key, value).
FILE_TABLES = {"catalog_properties": ("catalog", "properties"), "spark_conf": ("spark", "extra")}
# Keys whose value is a credential (s3.secret-access-key, fs.s3a.access.key, jdbc.password, token);
# not provider settings such as fs.s3a.aws.credentials.provider.
_CREDENTIAL_KEY = re.compile(
    r"(^|[.-])(password|secret([.-]access)?[.-]key|access[.-]key([.-]id)?|session[.-]token|token|credential)$",
    re.IGNORECASE,
)


def _file_table(path: Path, table: str, value: Any) -> tuple[tuple[str, str], ...]:
    """A [catalog_properties] or [spark_conf] table as sorted (key, value) pairs, or ConfigError."""
    if not isinstance(value, dict):
        raise ConfigError(f"--config {path}: {table} must be a [{table}] table of \"key\" = \"value\" strings")
    for key, item in value.items():
        if isinstance(item, dict):
            raise ConfigError(f"--config {path}: {table} key {key!r} holds a table, not a string; "
                              f"quote dotted keys, e.g. \"{key}.x.y\" = \"value\"")
        if not isinstance(item, str):
            raise ConfigError(f"--config {path}: {table} {key!r} = {item!r} is not a string; quote it")
        if table == "spark_conf" and not key.startswith("spark."):
            raise ConfigError(f"--config {path}: spark_conf key {key!r} is not a spark.* setting")
        if _CREDENTIAL_KEY.search(key):
            raise ConfigError(f"--config {path}: {table} key {key!r} is a credential; "
                              "give it through the environment, never in a file")
    return tuple(sorted(value.items()))


def _given(args: argparse.Namespace, env: Mapping[str, str], file_values: Mapping[str, Any],
           dest: str) -> tuple[Any, str]:
    """(value, where it came from) of one setting: its flag, else RAY_BACKFILL_<NAME>, else the
    config file; (None, the flag) when none gives it. The one precedence every setting follows."""
    value, origin = getattr(args, dest, None), "--" + dest.replace("_", "-")
    if value is None and env.get(ENV_PREFIX + dest.upper()) not in (None, ""):
        value, origin = env[ENV_PREFIX + dest.upper()], ENV_PREFIX + dest.upper()
    if value is None and dest in file_values:
        value, origin = file_values[dest], f"{dest} in {getattr(args, 'config', None)}"
    return value, origin


def resolve(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> tuple[Settings, Mapping[str, Any]]:
    """Build Settings from flags, env and the config file; also return the file's raw values."""
    env = os.environ if env is None else env
    file_values = _read_config_file(getattr(args, "config", None))
    sections: dict[str, dict[str, Any]] = {"catalog": {}, "spark": {}, "source": {}, "pipeline": {}}
    for opt in OPTIONS:
        value, origin = _given(args, env, file_values, opt.dest)
        if value is None:
            continue
        if opt.choices and value not in opt.choices:
            raise ConfigError(f"{origin} {value!r} is not one of {', '.join(opt.choices)}")
        try:
            sections[opt.section][opt.field] = opt.parse(value)
        except (TypeError, ValueError):
            shown = "***" if opt.secret else repr(value)
            raise ConfigError(f"{origin} {shown} is not a valid value") from None
    for table, (section, name) in FILE_TABLES.items():
        if table in file_values:
            sections[section][name] = _file_table(args.config, table, file_values[table])
    settings = Settings(
        catalog=CatalogConfig(**sections["catalog"]),
        spark=SparkConfig(**sections["spark"]),
        source=SourceConfig(**sections["source"]),
        pipeline=PipelineConfig(**sections["pipeline"]),
    )
    return absolute_paths(settings), file_values


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def parse_bool(value: Any) -> bool:
    """A yes/no setting: a bool, or one of true, false, 1, 0, yes, no, on, off."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ValueError("not one of true, false, 1, 0, yes, no")


def one_of(*choices: str) -> Callable[[Any], str]:
    """A parser that takes one of `choices` and refuses anything else."""
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"not one of {', '.join(choices)}")
        return value
    return parse


def run_setting(args: argparse.Namespace, file_values: Mapping[str, Any], name: str, default: Any,
                parse: Callable[[Any], Any] = lambda v: v, env: Mapping[str, str] | None = None) -> Any:
    """A run setting outside `Settings` (EXTRA_FILE_KEYS: --parallelism, --chunk, --skip-silver, ...):
    its flag, else RAY_BACKFILL_<NAME>, else the config file (`resolve`'s file values), else
    `default`; a bad value is a ConfigError naming where it came from."""
    value, origin = _given(args, os.environ if env is None else env, file_values, name)
    if value is None:
        return default
    try:
        return parse(value)
    except (TypeError, ValueError) as exc:
        why = str(exc) if str(exc).startswith("not one of") else "not a valid value"
        raise ConfigError(f"{origin} {value!r} is {why}") from None


# Ray unpacks a job's --working-dir here (…/session_…/runtime_resources/working_dir_files/_ray_pkg_…/)
# and deletes it with the session: nothing a run writes may live there.
_RAY_WORKING_DIR = ("runtime_resources", "working_dir_files")


def ray_job_copy(path: Path) -> Path | None:
    """The Ray job working-dir copy `path` lies in (its `_ray_pkg_…` folder), or None."""
    parts = path.parts
    for i in range(len(parts) - 2):
        if parts[i:i + 2] == _RAY_WORKING_DIR:
            return Path(*parts[:i + 3])
    return None


def absolute_paths(settings: Settings, cwd: Path | None = None) -> Settings:
    """Settings whose local paths are absolute, as the run stores them (a resume from another
    directory writes to the same warehouse and reads the same files).

    A warehouse or ledger dir inside a Ray job's temporary copy of its working directory is
    refused (Ray deletes it); an input file there stays relative to it, as each node has its own
    copy of the working directory.
    """
    cwd = cwd or Path.cwd()

    def absolute(value: str | Path) -> Path:
        path = Path(value).expanduser()
        return (path if path.is_absolute() else cwd / path).resolve()

    catalog, pipeline = settings.catalog, settings.pipeline
    changes: dict[str, Any] = {}
    for name, flag in (("warehouse", "--warehouse"), ("ledger_dir", "--ledger-dir")):
        value = getattr(catalog, name)
        if value is None or urlparse(str(value)).scheme:
            continue
        path = absolute(value)
        if ray_job_copy(path):
            raise ConfigError(f"{flag} {value} resolves to {path}, inside the Ray job's temporary copy of its "
                              "working directory, which Ray deletes; give an absolute path all nodes share or "
                              "a shared URI (s3a://, hdfs://)")
        changes[name] = str(path)
    files: dict[str, Any] = {}
    for name in ("locations_file", "pollutants_file"):
        path = absolute(getattr(pipeline, name))
        copy = ray_job_copy(path)
        files[name] = path.relative_to(copy) if copy and ray_job_copy(cwd) == copy else path
    return settings.replace(catalog=dataclasses.replace(catalog, **changes),
                            pipeline=dataclasses.replace(pipeline, **files))
