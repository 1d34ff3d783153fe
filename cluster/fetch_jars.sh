#!/usr/bin/env bash
# Resolve a JVM manifest (default cluster/jvm-deps.txt) once with Maven into a local folder.
# Usage: cluster/fetch_jars.sh [DEST [MANIFEST]]
#   DEST      default: $RAY_BACKFILL_JARS or ~/.cache/ray-backfill/jars
#   MANIFEST  default: cluster/jvm-deps.txt; e.g. cluster/jvm-deps-s3.txt for the optional S3 jars
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:-${RAY_BACKFILL_JARS:-$HOME/.cache/ray-backfill/jars}}"
manifest="${2:-$here/jvm-deps.txt}"
mkdir -p "$dest"
grep -v -E '^\s*(#|$)' "$manifest" | while read -r coord; do
  IFS=: read -r group artifact version <<<"$coord"
  jar="$dest/$artifact-$version.jar"
  if [[ -s "$jar" ]]; then continue; fi  # resolved before: nothing to do
  echo "fetching $coord" </dev/null >&2
  # Maven's own output only when it fails (quiet, it still prints colour resets)
  if ! out="$(mvn -q -B -Dstyle.color=never dependency:copy -Dartifact="$coord" -DoutputDirectory="$dest" \
                -Dmdep.overWriteIfNewer=true </dev/null 2>&1)"; then
    echo "$out" >&2
    echo "error: Maven could not fetch $coord (from $manifest)" >&2
    exit 1
  fi
done
