#!/usr/bin/env bash
# Sourced by cluster/postgres.sh and cluster/browser.sh: run as root, or through passwordless sudo.
# need_root WHAT PKG...  sets AS_ROOT (empty as root, else `sudo -n`), or exits saying what to run as root
# apt_install PKG...     Debian's packages, noninteractive, without recommends
set -euo pipefail
need_root() {
  local what="$1"
  shift
  AS_ROOT=()
  if [[ "$(id -u)" == 0 ]]; then return 0; fi
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    AS_ROOT=(sudo -n)
    return 0
  fi
  echo "error: $what and installing it needs root: run 'apt-get install -y --no-install-recommends $*' as root" >&2
  exit 1
}

apt_install() {
  echo "installing $* (apt-get install)" >&2
  "${AS_ROOT[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  "${AS_ROOT[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
}
