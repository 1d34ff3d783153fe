"""One typed, frozen configuration for warehouse, catalog, Spark, source and pipeline.

CLI flags, environment variables (RAY_BACKFILL_*) and config files all fill these objects;
each validates itself at construction, so a bad value fails before any session starts.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

from jobs.errors import ConfigError
from jobs.limits import SourceLimits, profile_limits

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"

CatalogKind = Literal["sqlite", "postgres", "hadoop", "rest"]
CATALOG_KINDS: tuple[CatalogKind, ...] = get_args(CatalogKind)
# Where a ledger dir may be: a local path, or a URI pyarrow.fs opens without extra libraries.
LEDGER_SCHEMES = ("", "file", "s3", "s3a")
SparkMode = Literal["raydp", "local"]
SPARK_MODES: tuple[SparkMode, ...] = get_args(SparkMode)
SourceKind = Literal["synthetic", "open-meteo"]
SOURCE_KINDS: tuple[SourceKind, ...] = get_args(SourceKind)


def validate_identifier(value: str, what: str) -> str:
    """Return `value` if it is a plain SQL identifier, else raise ConfigError naming `what`."""
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise ConfigError(f"{what} {value!r} is not a valid identifier (letters, digits, _)")
    return value


_SECRET_PARAM = re.compile(r"^(password|token|secret|credential|access[_-]?token)$", re.IGNORECASE)


def split_uri_secret(uri: str) -> tuple[str, str | None, str | None]:
    """(uri without credentials, the user it named, the password or token it held).

    Takes the password of `scheme://user:password@host` and `password=`/`token=` query
    parameters out of a catalog URI (JDBC URLs too: `jdbc:postgresql://h/db?user=u&password=p`),
    so the URI can be stored, printed and put on a command line; the secret travels as the
    catalog password does (environment, never the ledger)."""
    prefix, rest = ("jdbc:", uri[5:]) if uri.startswith("jdbc:") else ("", uri)
    parsed = urlparse(rest)
    user = secret = None
    netloc = parsed.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            user, secret = userinfo.split(":", 1)
            netloc = f"{user}@{host}"
    query = []
    for key, value in parse_qsl(parsed.query, keep_blank_values=True):
        if _SECRET_PARAM.match(key):
            secret = secret or value
        else:
            if key.lower() == "user":
                user = user or value
            query.append((key, value))
    if secret is None:
        return uri, user, None
    return prefix + urlunparse(parsed._replace(netloc=netloc, query=urlencode(query))), user, secret


@dataclass(frozen=True, kw_only=True)
class CatalogConfig:
    """Where the Iceberg catalog keeps its metadata, the warehouse its files and runs their ledgers."""

    # Spark catalog name that prefixes every table: <name>.bronze.open_meteo_hourly
    name: str = "lh"
    # sqlite: JDBC on <warehouse>/catalog.db (embedded default); postgres: JDBC on PostgreSQL;
    # hadoop: Hadoop catalog (safe only on HDFS/object stores with one writer); rest: REST catalog
    kind: CatalogKind = "sqlite"
    # warehouse root: a local path or a URI (file://, hdfs://, s3a://)
    warehouse: str = "./warehouse"
    # JDBC URL (postgres) or REST endpoint (rest); derived for sqlite
    uri: str | None = None
    # catalog user/password (postgres, rest); the password is never printed
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    # commit retries for concurrent chunk writers (Iceberg's default of 4 is too low)
    commit_retries: int = 20
    # extra Spark catalog properties, for S3/HDFS settings: {"io-impl": "..."}
    properties: tuple[tuple[str, str], ...] = ()
    # where run ledgers live: a path all nodes share or an s3://, s3a://, file:// URI (None: ledger_location)
    ledger_dir: str | None = None

    def __post_init__(self) -> None:
        validate_identifier(self.name, "catalog name")
        if self.uri:
            clean, _, secret = split_uri_secret(self.uri)
            if secret is not None:  # a credential in the URI becomes the password: never stored or shown
                if self.password is not None and self.password != secret:
                    raise ConfigError("the catalog uri holds a password and a different catalog password is given; "
                                      "give it once (RAY_BACKFILL_CATALOG_PASSWORD)")
                object.__setattr__(self, "uri", clean)
                object.__setattr__(self, "password", secret)
        if self.kind not in CATALOG_KINDS:
            raise ConfigError(f"catalog kind {self.kind!r} is unknown; use sqlite, postgres, hadoop or rest")
        if self.kind in ("postgres", "rest") and not self.uri:
            raise ConfigError(f"catalog kind {self.kind!r} needs a uri (e.g. jdbc:postgresql://host:5432/db)")
        if self.kind == "postgres" and not str(self.uri).startswith("jdbc:postgresql:"):
            raise ConfigError(f"catalog uri {self.uri!r} is not a jdbc:postgresql: URL")
        if self.commit_retries < 0:
            raise ConfigError(f"commit_retries {self.commit_retries} must be >= 0")
        if self.ledger_dir is not None:
            parsed = urlparse(self.ledger_dir)
            if not self.ledger_dir.strip() or parsed.scheme not in LEDGER_SCHEMES or (
                    parsed.scheme in ("s3", "s3a") and not parsed.netloc) or (
                    parsed.scheme == "file" and parsed.netloc not in ("", "localhost")):
                raise ConfigError(f"ledger_dir {self.ledger_dir!r} is not a path or an s3://bucket/..., "
                                  "s3a://bucket/... or file:// URI")

    @property
    def warehouse_is_local(self) -> bool:
        """True when the warehouse lives on this machine's file system."""
        scheme = urlparse(self.warehouse).scheme
        return scheme in ("", "file")

    @property
    def warehouse_path(self) -> Path:
        """The warehouse as an absolute local path (only for local warehouses)."""
        parsed = urlparse(self.warehouse)
        raw = parsed.path if parsed.scheme == "file" else self.warehouse
        return Path(raw).expanduser().resolve()

    @property
    def warehouse_uri(self) -> str:
        """The warehouse as a URI Spark and Iceberg accept."""
        return self.warehouse_path.as_uri() if self.warehouse_is_local else self.warehouse

    @property
    def sqlite_file(self) -> Path:
        """The SQLite catalog file of the embedded default."""
        return self.warehouse_path / "catalog.db"

    def jdbc_uri(self) -> str:
        """The JDBC URL of a sqlite/postgres catalog."""
        if self.kind == "sqlite":
            # WAL lets readers run beside one writer; the busy timeout makes writers wait for
            # each other, because Iceberg does not retry SQLITE_BUSY itself.
            return f"jdbc:sqlite:{self.sqlite_file}?journal_mode=WAL&busy_timeout=120000"
        return str(self.uri)

    def table(self, namespace: str, table: str) -> str:
        """Fully qualified table name `<catalog>.<namespace>.<table>`."""
        return f"{self.name}.{validate_identifier(namespace, 'namespace')}.{validate_identifier(table, 'table')}"


@dataclass(frozen=True, kw_only=True)
class SparkConfig:
    """How each fresh Spark session is built."""

    # raydp: driver + executors as Ray actors (default); local: plain local[N] in one JVM
    mode: SparkMode = "raydp"
    # executors and their size (raydp) / worker threads (local = executor_cores)
    num_executors: int = 1
    executor_cores: int = 1
    executor_memory: str = "768m"
    driver_memory: str = "1g"
    # shuffle partitions: small data per chunk, few cores
    shuffle_partitions: int = 2
    # extra spark.* settings
    extra: tuple[tuple[str, str], ...] = ()
    # start the driver JVM from a class-data-sharing archive (ray_backfill/cds.py): seconds off every session
    class_data_sharing: bool = True
    # extra options for the driver JVM, appended (e.g. "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
    driver_java_options: str = ""
    # start every JVM of the session (driver, executors, RayDP's master) with the C1 compiler alone and
    # the serial collector: faster for a session that runs one short job, e.g. a bronze chunk
    quick_start: bool = False

    def __post_init__(self) -> None:
        if self.mode not in SPARK_MODES:
            raise ConfigError(f"spark mode {self.mode!r} is unknown; use raydp or local")
        for name in ("num_executors", "executor_cores", "shuffle_partitions"):
            if getattr(self, name) < 1:
                raise ConfigError(f"spark {name} {getattr(self, name)} must be >= 1")
        for name in ("executor_memory", "driver_memory"):
            if not re.match(r"^\d+[kmgKMG]$", getattr(self, name)):
                raise ConfigError(f"spark {name} {getattr(self, name)!r} must look like 768m or 2g")


FREE_HOST = "air-quality-api.open-meteo.com"
CUSTOMER_HOST = "customer-air-quality-api.open-meteo.com"  # the commercial API, with apikey=


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """Where hourly air-quality rows come from."""

    # synthetic: built-in, offline, deterministic (default); open-meteo: the HTTP API
    kind: SourceKind = "synthetic"
    # Open-Meteo base URL (the path /v1/air-quality is appended)
    api_url: str = "https://air-quality-api.open-meteo.com"
    # commercial API key; sent as apikey=, never logged or printed
    api_key: str | None = field(default=None, repr=False)
    # seconds per HTTP request before it counts as a timeout
    timeout_s: float = 60.0
    # attempts per request for 429/5xx/timeouts/broken bodies
    max_attempts: int = 6
    # first backoff and its cap, seconds (exponential, full jitter; Retry-After wins)
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    # locations per request (Open-Meteo accepts comma-separated coordinates)
    batch_size: int = 1
    # Open-Meteo model domain and cell selection, sent explicitly
    domains: str = "cams_global"
    cell_selection: str = "nearest"
    # seed of the synthetic source
    seed: int = 7
    # the source's limits, shared by every chunk of a run: free | self-hosted | unlimited
    # (jobs/limits.py); the fields below override single limits of the profile
    profile: str = "free"
    calls_per_minute: float | None = None
    calls_per_hour: float | None = None
    calls_per_day: float | None = None
    max_in_flight: int | None = None
    # requests one chunk keeps open at once (default: the in-flight limit, at most 8)
    concurrency: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ConfigError(f"source {self.kind!r} is unknown; use synthetic or open-meteo")
        if self.api_key and urlparse(self.api_url).netloc == FREE_HOST:
            # a key is for the commercial API, which answers on its own host; the free one refuses keys
            object.__setattr__(self, "api_url", self.api_url.replace(FREE_HOST, CUSTOMER_HOST, 1))
        parsed = urlparse(self.api_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"api url {self.api_url!r} is not an http(s) URL")
        if self.max_attempts < 1 or self.batch_size < 1 or self.timeout_s <= 0:
            raise ConfigError("source max_attempts, batch_size and timeout_s must be positive")
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError(f"source concurrency {self.concurrency} must be >= 1")
        self.limits  # validates the profile and the overrides

    @property
    def limits(self) -> SourceLimits:
        """The profile's limits with this config's overrides applied."""
        overrides = {name: value for name, value in (
            ("per_minute", self.calls_per_minute), ("per_hour", self.calls_per_hour),
            ("per_day", self.calls_per_day), ("max_in_flight", self.max_in_flight)) if value is not None}
        return dataclasses.replace(profile_limits(self.profile), **overrides)

    @property
    def request_concurrency(self) -> int:
        """Requests one chunk sends at once."""
        return self.concurrency or min(8, self.limits.max_in_flight or 8)


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """Inputs and rules of the bronze → silver → gold pipeline."""

    locations_file: Path = DATA_DIR / "locations.jsonl"
    pollutants_file: Path = DATA_DIR / "pollutants.jsonl"
    # restrict the run to these location keys / pollutant codes (None: all in the files)
    locations: tuple[str, ...] | None = None
    pollutants: tuple[str, ...] | None = None
    # fact_episode rule: aqi >= threshold for at least min_hours consecutive clock hours
    episode_threshold: int = 151
    episode_min_hours: int = 4

    def __post_init__(self) -> None:
        if not 0 < self.episode_threshold <= 500:
            raise ConfigError(f"episode threshold {self.episode_threshold} must be in 1..500")
        if self.episode_min_hours < 1:
            raise ConfigError(f"episode min hours {self.episode_min_hours} must be >= 1")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything one run needs; built once by the CLI (flags, environment, config file)."""

    catalog: CatalogConfig = CatalogConfig()
    spark: SparkConfig = SparkConfig()
    source: SourceConfig = SourceConfig()
    pipeline: PipelineConfig = PipelineConfig()

    def replace(self, **sections) -> "Settings":
        """A copy with some sections replaced."""
        return dataclasses.replace(self, **sections)


SECRET_FIELDS = {("catalog", "password"): "RAY_BACKFILL_CATALOG_PASSWORD", ("source", "api_key"): "RAY_BACKFILL_API_KEY"}


def settings_to_dict(settings: Settings) -> dict:
    """Settings as plain JSON data, WITHOUT secrets (they travel in environment variables)."""
    data = dataclasses.asdict(settings)
    for (section, name) in SECRET_FIELDS:
        data[section][name] = None
    data["pipeline"]["locations_file"] = str(settings.pipeline.locations_file)
    data["pipeline"]["pollutants_file"] = str(settings.pipeline.pollutants_file)
    return data


def settings_from_dict(data: dict, env: dict | None = None) -> Settings:
    """Rebuild Settings from `settings_to_dict` output; secrets are read from the environment."""
    env = os.environ if env is None else env
    sections = {k: dict(v) for k, v in data.items()}
    for (section, name), var in SECRET_FIELDS.items():
        sections[section][name] = env.get(var) or None
    for section, keys in (("catalog", ("properties",)), ("spark", ("extra",))):
        for key in keys:
            sections[section][key] = tuple(tuple(p) for p in sections[section].get(key) or ())
    pipe = sections["pipeline"]
    pipe["locations_file"] = Path(pipe["locations_file"])
    pipe["pollutants_file"] = Path(pipe["pollutants_file"])
    for key in ("locations", "pollutants"):
        pipe[key] = tuple(pipe[key]) if pipe.get(key) else None
    return Settings(
        catalog=CatalogConfig(**sections["catalog"]),
        spark=SparkConfig(**sections["spark"]),
        source=SourceConfig(**sections["source"]),
        pipeline=PipelineConfig(**pipe),
    )


def secret_env(settings: Settings) -> dict[str, str]:
    """The environment variables that carry the settings' secrets to a child process."""
    out = {}
    for (section, name), var in SECRET_FIELDS.items():
        value = getattr(getattr(settings, section), name)
        if value:
            out[var] = value
    return out
