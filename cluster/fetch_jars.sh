#!/usr/bin/env bash
# Resolve the JVM manifest (cluster/jvm-deps.txt) once with Maven into a local folder.
# Usage: cluster/fetch_jars.sh [DEST]   (default: .jars next to this repo's root)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:-$here/../.jars}"
mkdir -p "$dest"
grep -v -E '^\s*(#|$)' "$here/jvm-deps.txt" | while read -r coord; do
  IFS=: read -r group artifact version <<<"$coord"
  jar="$dest/$artifact-$version.jar"
  if [[ -s "$jar" ]]; then continue; fi
  echo "fetching $coord" </dev/null >&2
  mvn -q -B dependency:copy -Dartifact="$coord" -DoutputDirectory="$dest" -Dmdep.overWriteIfNewer=true </dev/null >&2
done
