"""Where a catalog's run ledgers live (a local path or a URI), where a run's attempt logs go, and the
S3 settings a ledger on S3 is reached with. Which store that means is `run_ledger.open_ledger`'s."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

from jobs.config import CatalogConfig
from jobs.errors import ConfigError
from ray_backfill.ledger.state import check_run_id

RUNS_IN_WAREHOUSE = "_ray_backfill/runs"


def ledger_location(catalog: CatalogConfig) -> Path | str:
    """Where the run ledgers of a catalog live: a local Path, or an s3://, s3a://, file:// URI.

    `ledger_dir` when set; else `<warehouse>/_ray_backfill/runs` for a local warehouse (a path)
    or an s3/s3a one (a URI in its bucket). Any other warehouse (hdfs://) needs `ledger_dir`:
    pyarrow reaches HDFS only through libhdfs and a JVM, which a terminal on a node may lack.
    """
    if catalog.ledger_dir:
        if urlparse(catalog.ledger_dir).scheme:
            return catalog.ledger_dir
        return Path(catalog.ledger_dir).expanduser().resolve()
    if catalog.warehouse_is_local:
        return catalog.warehouse_path / RUNS_IN_WAREHOUSE
    if urlparse(catalog.warehouse).scheme in ("s3", "s3a"):
        return f"{catalog.warehouse.rstrip('/')}/{RUNS_IN_WAREHOUSE}"
    raise ConfigError(f"the run ledger cannot live in warehouse {catalog.warehouse!r}; give --ledger-dir "
                      "(or RAY_BACKFILL_LEDGER_DIR, ledger_dir in --config) a path all nodes share "
                      "(e.g. NFS) or an s3:// URI")


def run_log_dir(catalog: CatalogConfig, run_id: str) -> Path | None:
    """Where a run's attempt logs go: `<run>/logs/` next to its ledger when that is a local path
    (all nodes see it: a local warehouse is refused on a cluster of several hosts); else None, and
    each attempt logs under its node's Ray log folder (ray_backfill/executors/ray.py: attempt_log)."""
    try:
        where = ledger_location(catalog)
    except ConfigError:
        return None
    return where / check_run_id(run_id) / "logs" if isinstance(where, Path) else None


def s3_options(properties: Mapping[str, str], env: Mapping[str, str]) -> dict[str, Any]:
    """pyarrow S3FileSystem arguments from the Iceberg catalog properties, else the AWS variables.

    Credentials are left to the AWS SDK's own chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
    profiles, instance roles, IRSA), so no secret passes through here.
    """
    options: dict[str, Any] = {}
    endpoint = properties.get("s3.endpoint") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["scheme"], options["endpoint_override"] = parsed.scheme, parsed.netloc
    region = properties.get("client.region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    # pyarrow uses path-style URLs unless told otherwise; Iceberg's s3.path-style-access=false asks for virtual-hosted
    if properties.get("s3.path-style-access", "").strip().lower() == "false":
        options["force_virtual_addressing"] = True
    return options
