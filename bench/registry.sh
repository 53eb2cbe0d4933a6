#!/usr/bin/env bash
# Registry benchmark: registrations/s and lookups/s of a release-build agent, side by side with etcd (the store
# a home-made registry, and Switchboard's cluster mode, would use) in the same run, and the agent's memory (RSS)
# with 100,000 registered instances.
#
# Usage: bench/registry.sh            (DURATION=10 CONNECTIONS=64 THREADS=2 INSTANCES=100000 to change)
# Everything runs on 127.0.0.1; every process started here is stopped on exit. Results go to stdout and to
# bench/out/registry-<time>.md.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
INSTANCES=${INSTANCES:-100000}
AGENT_PORT=${AGENT_PORT:-17500}
ETCD_PORT=${ETCD_PORT:-12379}

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v etcd >/dev/null || need+=(etcd-server)
command -v curl >/dev/null || need+=(curl)
command -v bc >/dev/null || need+=(bc)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

# shellcheck source=bench/common.sh
source bench/common.sh

rss_kib() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }


"$binary" agent --dns-disable --http-addr "127.0.0.1:$AGENT_PORT" --data-dir "$work/agent" --log-level warning &
agent=$!
pids+=("$agent")
base="http://127.0.0.1:$AGENT_PORT"
wait_for "$base/v1/agent"
rss_empty=$(rss_kib "$agent")

start_etcd "$ETCD_PORT"

rows=()
# 1. Writes: each request registers a new instance (durable before the answer, SQLite WAL).
rows+=("$(wrk_run "register (PUT, new instance), fsync per commit (default)" "$base" -s bench/wrk/register.lua)")
"$binary" agent --dns-disable --http-addr "127.0.0.1:$((AGENT_PORT + 1))" --data-dir "$work/agent-normal" --sqlite-sync normal \
    --log-level warning &
normal=$!
pids+=("$normal")
wait_for "http://127.0.0.1:$((AGENT_PORT + 1))/v1/agent"
rows+=("$(wrk_run "register, --sqlite-sync normal (no fsync)" "http://127.0.0.1:$((AGENT_PORT + 1))" -s bench/wrk/register.lua)")
kill "$normal"
wait "$normal" 2>/dev/null || true
rows+=("$(wrk_run "etcd put (same JSON value)" "$etcd_base" -s bench/wrk/etcd-put.lua)")

# 2. Reads of one service of 10 instances.
for n in $(seq 1 10); do
    curl -s -o /dev/null -X PUT "$base/v1/services/payment/instances/p$n" \
        -H 'Content-Type: application/json' -d "{\"address\": \"10.0.1.$n\", \"port\": 8080}"
    value=$(printf '{"address": "10.0.1.%s", "port": 8080}' "$n" | base64 -w0)
    key=$(printf '/services/payment/p%s' "$n" | base64 -w0)
    curl -s -o /dev/null "$etcd_base/v3/kv/put" -d "{\"key\": \"$key\", \"value\": \"$value\"}"
done
rows+=("$(wrk_run "lookup, 10 instances (GET)" "$base/v1/services/payment")")
RANGE_KEY=$(printf '/services/payment/' | base64 -w0)
RANGE_END=$(printf '/services/payment0' | base64 -w0)
export RANGE_KEY RANGE_END
rows+=("$(wrk_run "etcd range, 10 keys" "$etcd_base" -s bench/wrk/etcd-range.lua)")

# 3. Memory with INSTANCES instances, on a fresh agent: 1,000 services of INSTANCES/1000 instances each.
kill "$agent"
wait "$agent" 2>/dev/null || true
"$binary" agent --dns-disable --http-addr "127.0.0.1:$AGENT_PORT" --data-dir "$work/agent-big" --log-level warning &
agent=$!
pids+=("$agent")
wait_for "$base/v1/agent"
rss_fresh=$(rss_kib "$agent")
# wrk calls request() once before the first send, so each thread registers QUOTA - 1 distinct instances; it stops
# sending once its quota is answered, but only exits at its duration, so it is stopped when the catalog is full.
per_thread=$(( INSTANCES / THREADS + 1 ))
start=$(date +%s.%N)
QUOTA=$per_thread SERVICES=1000 wrk -t"$THREADS" -c"$CONNECTIONS" -d600s -s bench/wrk/register.lua "$base" >/dev/null &
populate=$!
pids+=("$populate")
registered=0
while [ "$registered" -lt "$INSTANCES" ] && kill -0 "$populate" 2>/dev/null; do
    sleep 0.2
    registered=$(curl -s "$base/v1/agent" | sed -E 's/.*"instances":([0-9]+).*/\1/')
done
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
kill "$populate" 2>/dev/null || true
wait "$populate" 2>/dev/null || true
sleep 1
rss_full=$(rss_kib "$agent")
rows+=("$(wrk_run "lookup at ${registered} instances, service of $((INSTANCES / 1000))" "$base/v1/services/svc-42")")
rows+=("$(wrk_run "service list at ${registered} instances (1,000 services)" "$base/v1/services")")
kill "$agent"
wait "$agent" 2>/dev/null || true
start_restart=$(date +%s.%N)
"$binary" agent --dns-disable --http-addr "127.0.0.1:$AGENT_PORT" --data-dir "$work/agent-big" --log-level warning &
agent=$!
pids+=("$agent")
wait_for "$base/v1/agent"
restart_s=$(echo "$(date +%s.%N) - $start_restart" | bc)
rss_reloaded=$(rss_kib "$agent")

mkdir -p bench/out
report="bench/out/registry-$(date -u +%Y%m%dT%H%M%SZ).md"
{
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr); $(swift --version 2>/dev/null | head -1)"
    echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency, agent and etcd $(etcd --version | head -1 | awk '{ print $3 }') on 127.0.0.1, all sharing the cores"
    echo
    echo "| load | requests/s | p50 | p99 | non-2xx |"
    echo "|---|---|---|---|---|"
    for row in "${rows[@]}"; do echo "| ${row//|/ | } |"; done
    echo
    echo "| memory | RSS |"
    echo "|---|---|"
    echo "| agent, empty catalog | $((rss_empty / 1024)) MiB |"
    echo "| agent after registering ${registered} instances ($(printf '%.0f' "$(echo "$registered / $elapsed" | bc -l)") registrations/s over $(printf '%.1f' "$elapsed") s) | $((rss_full / 1024)) MiB |"
    echo "| agent restarted on that data (ready in $(printf '%.2f' "$restart_s") s) | $((rss_reloaded / 1024)) MiB |"
} | tee "$report"
