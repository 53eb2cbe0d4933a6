#!/usr/bin/env bash
# Propagation benchmark of a release-build agent: a registration's delivery latency to WATCHERS (1,000) concurrent
# watchers, over CHANGES (200) changes, for Server-Sent Events streams and separately for blocking queries, side by
# side with etcd watches (the peer a home-made registry would sit on) for the same number of watchers and changes.
#
# Usage: bench/watch.sh      (WATCHERS=1000 CHANGES=200 to change)
# Everything runs on 127.0.0.1; every process started here is stopped on exit. Results go to stdout and to
# bench/out/watch-<time>.md. The driver is bench/watch_driver.py (Python asyncio, uvloop when installed).
set -euo pipefail
cd "$(dirname "$0")/.."

WATCHERS=${WATCHERS:-1000}
CHANGES=${CHANGES:-200}
AGENT_PORT=${AGENT_PORT:-17520}
ETCD_PORT=${ETCD_PORT:-12489}

need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
python3 -c 'import uvloop' 2>/dev/null || python3 -m pip install -q --disable-pip-version-check uvloop ||
    echo "uvloop not installed: the driver uses asyncio's own loop" >&2
# Two ends of WATCHERS connections each, in one process per side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# shellcheck source=bench/common.sh
source bench/common.sh

rows=()
row() { # name json
    python3 -c 'import json, sys
r = json.loads(sys.argv[2])
keys = ["p50_ms", "p99_ms", "max_ms", "per_change_max_p50_ms", "missed"]
print("|".join([sys.argv[1]] + [str(r[key]) for key in keys]))' "$1" "$2"
}

for mode in sse blocking; do
    "$binary" agent --dns-disable --http-addr "127.0.0.1:$AGENT_PORT" --data-dir "$work/agent-$mode" --log-level warning &
    agent=$!
    pids+=("$agent")
    wait_for "http://127.0.0.1:$AGENT_PORT/v1/agent"
    result=$(python3 bench/watch_driver.py "$mode" "http://127.0.0.1:$AGENT_PORT" "$WATCHERS" "$CHANGES")
    case $mode in
    sse) name="agent, $WATCHERS SSE streams (GET .../watch)" ;;
    blocking) name="agent, $WATCHERS blocking queries (GET ...?index=N)" ;;
    esac
    rows+=("$(row "$name" "$result")")
    kill "$agent"
    wait "$agent" 2>/dev/null || true
done

start_etcd "$ETCD_PORT"
result=$(python3 bench/watch_driver.py etcd "http://127.0.0.1:$ETCD_PORT" "$WATCHERS" "$CHANGES")
rows+=("$(row "etcd $(etcd --version | awk '/etcd Version/ { print $3 }'), $WATCHERS watches (POST /v3/watch)" "$result")")

mkdir -p bench/out
out="bench/out/watch-$(date -u +%Y%m%dT%H%M%SZ).md"
{
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)," \
        "Linux $(uname -r); $(swift --version 2>&1 | head -1)"
    echo "$WATCHERS watchers, $CHANGES changes, one after another; driver: bench/watch_driver.py on the same cores"
    echo
    echo "| watchers | p50 | p99 | max | slowest watcher per change, p50 | missed |"
    echo "|---|---|---|---|---|---|"
    for r in "${rows[@]}"; do
        IFS='|' read -r name p50 p99 max worst missed <<<"$r"
        echo "| $name | ${p50} ms | ${p99} ms | ${max} ms | ${worst} ms | $missed |"
    done
} | tee "$out"
