#!/usr/bin/env bash
# Start (or stop) one node of a ray-backfill Ray cluster by hand, with Ray's token auth on.
#
#   cluster/ray-node.sh head [--port N] [--dashboard-port N] [--dashboard-host ADDR]
#   cluster/ray-node.sh worker HEAD_HOST:PORT
#   cluster/ray-node.sh stop
#
# Optional environment: NUM_CPUS and MEMORY (bytes, or 512m / 8g) become `ray start --num-cpus`
# and `--memory`; NODE_IP becomes `--node-ip-address` (for hosts with several addresses).
#
# Token auth (Ray 2.60): every Ray process and client needs RAY_AUTH_MODE=token and the same
# token. `head` creates it once in ~/.ray/auth_token; copy that file to ~/.ray/auth_token on every
# worker host and on every machine that submits jobs (or set RAY_AUTH_TOKEN there).
# Uses the project's .venv when there is one (`make setup`), else `ray` on PATH.
set -euo pipefail

usage() {
  echo "usage: cluster/ray-node.sh head [--port N] [--dashboard-port N] [--dashboard-host ADDR]" >&2
  echo "       cluster/ray-node.sh worker HEAD_HOST:PORT" >&2
  echo "       cluster/ray-node.sh stop" >&2
}

bad_usage() {  # a wrong argument: say which, show the usage, exit 2
  echo "error: $1" >&2
  usage
  exit 2
}

die() {
  echo "error: $1" >&2
  exit 1
}

is_port() { [[ $1 =~ ^[0-9]+$ ]] && ((10#$1 >= 1 && 10#$1 <= 65535)); }

root="$(cd "$(dirname "$0")/.." && pwd)"
port=6379
dashboard_port=8265
dashboard_host=127.0.0.1
head_address=

# Everything is checked before anything starts.
[[ $# -ge 1 ]] || bad_usage "missing command: head, worker or stop"
command=$1
shift
case $command in
  head)
    while [[ $# -gt 0 ]]; do
      case $1 in
        --port | --dashboard-port | --dashboard-host)
          [[ $# -ge 2 ]] || bad_usage "$1 needs a value"
          case $1 in
            --port) is_port "$2" || bad_usage "--port '$2' is not a port number (1-65535)"; port=$2 ;;
            --dashboard-port) is_port "$2" || bad_usage "--dashboard-port '$2' is not a port number (1-65535)"; dashboard_port=$2 ;;
            --dashboard-host) dashboard_host=$2 ;;
          esac
          shift 2
          ;;
        *) bad_usage "unknown argument for head: '$1'" ;;
      esac
    done
    ;;
  worker)
    [[ $# -eq 1 ]] || bad_usage "worker needs exactly one HEAD_HOST:PORT"
    [[ $1 =~ ^[^:[:space:]]+:[0-9]+$ ]] && is_port "${1##*:}" || bad_usage "'$1' is not HEAD_HOST:PORT (e.g. 10.0.0.5:6379)"
    head_address=$1
    ;;
  stop)
    [[ $# -eq 0 ]] || bad_usage "stop takes no arguments"
    ;;
  -h | --help)
    usage
    exit 0
    ;;
  *) bad_usage "unknown command '$command'" ;;
esac

start_args=()
if [[ -n ${NUM_CPUS:-} ]]; then
  [[ $NUM_CPUS =~ ^[0-9]+$ ]] || bad_usage "NUM_CPUS '$NUM_CPUS' is not a whole number"
  start_args+=(--num-cpus "$NUM_CPUS")
fi
if [[ -n ${MEMORY:-} ]]; then
  [[ $MEMORY =~ ^([0-9]+)([kKmMgG]?)$ ]] || bad_usage "MEMORY '$MEMORY' is not bytes or a size like 512m / 8g"
  case ${BASH_REMATCH[2],,} in
    k) bytes=$((10#${BASH_REMATCH[1]} * 1024)) ;;
    m) bytes=$((10#${BASH_REMATCH[1]} * 1024 ** 2)) ;;
    g) bytes=$((10#${BASH_REMATCH[1]} * 1024 ** 3)) ;;
    *) bytes=$((10#${BASH_REMATCH[1]})) ;;
  esac
  start_args+=(--memory "$bytes")
fi
[[ -z ${NODE_IP:-} ]] || start_args+=(--node-ip-address "$NODE_IP")

if [[ -x $root/.venv/bin/ray ]]; then
  PATH="$root/.venv/bin:$PATH"
fi
command -v ray >/dev/null || die "no 'ray' command: run 'make setup' in $root (creates .venv), or pip install -e ."
export RAY_AUTH_MODE=token
# What the cluster keeps as runs go on stays bounded (docs/operations.md#ray-state): the same bounds
# as a local cluster a run starts (ray_backfill/ray_bounds.py; tests/test_cluster_files.py checks).
export RAY_ROTATION_MAX_BYTES=${RAY_ROTATION_MAX_BYTES:-8388608} RAY_ROTATION_BACKUP_COUNT=${RAY_ROTATION_BACKUP_COUNT:-1} \
  RAY_LOG_MONITOR_MAX_OPEN_FILES=${RAY_LOG_MONITOR_MAX_OPEN_FILES:-32}
system_config='{"maximum_gcs_destroyed_actor_cached_count": 100, "maximum_gcs_dead_worker_cached_count": 100, "task_events_max_num_task_in_gcs": 1000}'

warn_missing_jars() {  # a chunk placed on this node would fail without them
  local manifest=$root/cluster/jvm-deps.txt jars=${RAY_BACKFILL_JARS:-$HOME/.cache/ray-backfill/jars} coord artifact version
  [[ -f $manifest ]] || return 0
  while read -r coord; do
    IFS=: read -r _ artifact version <<<"$coord"
    if [[ ! -s $jars/$artifact-$version.jar ]]; then
      echo "warning: $jars/$artifact-$version.jar is missing on this node: run 'make setup' (cluster/fetch_jars.sh)" >&2
    fi
  done < <(grep -v -E '^\s*(#|$)' "$manifest")
}

this_host() {
  if [[ -n ${NODE_IP:-} ]]; then echo "$NODE_IP"; return; fi
  local ip
  ip=$(hostname -I 2>/dev/null | awk '{print $1}') || true
  echo "${ip:-$(hostname)}"
}

case $command in
  head)
    warn_missing_jars
    # Creates ~/.ray/auth_token the first time; prints the token, which we keep off the terminal.
    ray get-auth-token --generate >/dev/null
    ray start --head --port "$port" --dashboard-host "$dashboard_host" --dashboard-port "$dashboard_port" \
      --include-dashboard=true --disable-usage-stats --system-config "$system_config" "${start_args[@]}"
    host=$(this_host)
    if [[ $dashboard_host == 127.0.0.1 || $dashboard_host == localhost ]]; then
      dashboard="http://127.0.0.1:$dashboard_port"
      reach="on this host; from elsewhere: ssh -L $dashboard_port:127.0.0.1:$dashboard_port $host (or --dashboard-host 0.0.0.0)"
    else
      dashboard="http://$host:$dashboard_port"
      reach="token auth is on: the dashboard asks for the token, shown by 'ray get-auth-token'"
    fi
    cat <<EOF

Ray head is up. Dashboard: $dashboard ($reach)

Next steps:
  1. On every worker host: copy the token (keep it private: it is the cluster's password), then join:
       ssh WORKER_HOST 'mkdir -p ~/.ray' && scp -p ~/.ray/auth_token WORKER_HOST:.ray/auth_token
       cluster/ray-node.sh worker $host:$port
  2. Submit a backfill from the project folder (token auth needs RAY_AUTH_MODE=token):
       export RAY_AUTH_MODE=token
       ray job submit --address $dashboard --working-dir . -- \\
           python -m ray_backfill.cli run --start-date 2024-01-01 --end-date 2024-06-30 --config cluster/warehouse-s3.toml
  3. Follow it in the dashboard (Jobs; Actors: one bronze-YYYY-MM actor per chunk), or:
       ray-backfill status --warehouse WAREHOUSE
EOF
    ;;
  worker)
    if [[ -z ${RAY_AUTH_TOKEN:-} && ! -s ${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token} ]]; then
      die "no Ray auth token on this host: copy ~/.ray/auth_token from the head to $HOME/.ray/auth_token (or set RAY_AUTH_TOKEN)"
    fi
    warn_missing_jars
    ray start --address "$head_address" --disable-usage-stats "${start_args[@]}"
    cat <<EOF

Ray worker on $(this_host) joined $head_address. Check the cluster with: RAY_AUTH_MODE=token ray status --address $head_address
EOF
    ;;
  stop)
    # Stops every Ray process of this user on this host (head or worker).
    ray stop
    ;;
esac
