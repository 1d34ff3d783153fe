#!/usr/bin/env bash
# PostgreSQL, the multi-host Iceberg catalog: what the tests need of it on this machine.
# Usage: cluster/postgres.sh install   install Debian's postgresql unless initdb and pg_ctl are there
#        cluster/postgres.sh bindir    print the folder of initdb, pg_ctl and postgres (newest version)
# The tests start their own throwaway server (tests/postgres.py); nothing here starts one.
set -euo pipefail
source "$(dirname "$0")/apt.sh"
root="${POSTGRES_LIB:-/usr/lib/postgresql}"

bindir() {
  local dir
  dir="$(ls -d "$root"/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then echo "$dir"; fi
}

install() {
  if [[ -n "$(bindir)" ]]; then return 0; fi
  need_root "PostgreSQL (initdb, pg_ctl under $root/*/bin) is missing" postgresql
  # The tests run their own servers: do not create and start the package's system-wide cluster.
  "${AS_ROOT[@]}" mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" | "${AS_ROOT[@]}" tee /etc/postgresql-common/createcluster.d/ray-backfill.conf >/dev/null
  apt_install postgresql
  if [[ -z "$(bindir)" ]]; then
    echo "error: apt-get installed postgresql but no initdb/pg_ctl is under $root/*/bin" >&2
    exit 1
  fi
}

case "${1:-}" in
  install) install ;;
  bindir)
    dir="$(bindir)"
    if [[ -z "$dir" ]]; then echo "error: no PostgreSQL under $root/*/bin; run: $0 install" >&2; exit 1; fi
    echo "$dir" ;;
  *) echo "usage: $0 install|bindir" >&2; exit 2 ;;
esac
