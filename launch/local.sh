#!/usr/bin/env bash
# Run one distill-jax command as N cooperating JAX processes on this machine, each with D virtual
# CPU devices (what the multi-host tests use; also a dry run for a pod launch).
#
# Usage: launch/local.sh [-n NUM_PROCESSES] [-d DEVICES_PER_PROCESS] [-p PORT] -- distill-jax SUBCOMMAND [flags...]
#   -n  processes (default 2)   -d  CPU devices per process (default 4)   -p  coordinator port (default 12355)
# Each process gets --coordinator_address=localhost:PORT --num_processes=N --process_id=i; logs of
# process i go to stderr prefixed with [pI]. Exits non-zero if any process fails.
set -euo pipefail
n=2; d=4; port=12355
while getopts "n:d:p:h" opt; do
  case $opt in
    n) n=$OPTARG ;; d) d=$OPTARG ;; p) port=$OPTARG ;;
    h|*) sed -n '2,9p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
if [ $# -eq 0 ]; then
  echo "launch/local.sh: no command given; e.g. launch/local.sh -n 2 -d 4 -- distill-jax train --workdir=/tmp/w" >&2
  exit 2
fi
command -v "$1" >/dev/null || { echo "launch/local.sh: '$1' not found on PATH (pip install . first?)" >&2; exit 2; }
pids=()
for ((i = 0; i < n; i++)); do
  JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=$d" \
    "$@" --coordinator_address="localhost:$port" --num_processes="$n" --process_id="$i" \
    2> >(sed "s/^/[p$i] /" >&2) &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
