#!/usr/bin/env bash
# Resolve the JVM manifest (cluster/jvm-deps.txt) once with Maven into a local folder.
# Usage: cluster/fetch_jars.sh [DEST]   (default: $RAY_BACKFILL_JARS or ~/.cache/ray-backfill/jars)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:-${RAY_BACKFILL_JARS:-$HOME/.cache/ray-backfill/jars}}"
mkdir -p "$dest"
grep -v -E '^\s*(#|$)' "$here/jvm-deps.txt" | while read -r coord; do
  IFS=: read -r group artifact version <<<"$coord"
  jar="$dest/$artifact-$version.jar"
  if [[ -s "$jar" ]]; then continue; fi  # resolved before: nothing to do
  echo "fetching $coord" </dev/null >&2
  mvn -q -B -Dstyle.color=never dependency:copy -Dartifact="$coord" -DoutputDirectory="$dest" -Dmdep.overWriteIfNewer=true </dev/null >&2
done
