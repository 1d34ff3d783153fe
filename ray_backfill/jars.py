"""The JVM jars every Spark session needs, and where `make setup` put them."""

from __future__ import annotations

import os
from pathlib import Path

from jobs.config import PROJECT_ROOT
from jobs.errors import ConfigError

# Resolved once by `make setup` (cluster/fetch_jars.sh) into a per-user cache, outside the source
# tree, so a `ray job submit --working-dir .` copy and every cluster node find them.
JARS_DIR = Path(os.environ.get("RAY_BACKFILL_JARS") or Path.home() / ".cache" / "ray-backfill" / "jars")
JVM_MANIFEST = PROJECT_ROOT / "cluster" / "jvm-deps.txt"


def manifest_jars(jars_dir: Path = JARS_DIR, manifest: Path = JVM_MANIFEST) -> list[str]:
    """Absolute paths of the manifest's jars, which `make setup` resolved once into `jars_dir`."""
    jars = []
    for line in manifest.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        _group, artifact, version = line.split(":")
        jar = jars_dir / f"{artifact}-{version}.jar"
        if not jar.is_file():
            raise ConfigError(
                f"JVM dependency {line} is missing at {jar}; run `make setup` (cluster/fetch_jars.sh)"
            )
        jars.append(str(jar))
    return jars
