#!/usr/bin/env bash
# Proxy throughput: wrk through the gateway, through nginx and through HAProxy to the same two backends (nginx
# answering 200 "ok"), in one run, rounds alternating between the proxies.
#
# CPU layout (2 cores, shared): the backends and wrk share CPU 1, the proxy under test has CPU 0 to itself
# (taskset), so each proxy gets one core. nginx runs one worker; HAProxy is given 2 threads but one core; the
# gateway's event loops follow its core count (one here).
#
# Usage: bench/gateway.sh [DURATION_SECONDS=10] [ROUNDS=3]   (CONNECTIONS=64 THREADS=1 to change)
# The configs of the peers are bench/gateway/*.conf and haproxy.cfg. Results go to stdout and to
# bench/out/gateway-<time>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
ROUNDS=${2:-3}
THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-64}
AGENT_PORT=${AGENT_PORT:-17720}
GATEWAY_PORT=${GATEWAY_PORT:-17780}
for tool in nginx haproxy wrk taskset curl; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install nginx haproxy wrk curl util-linux" >&2; exit 1; }
done
source bench/common.sh

mkdir -p "$work/nginx-backend" "$work/nginx-proxy"
taskset -c 1 nginx -c "$PWD/bench/gateway/nginx-backend.conf" -p "$work/nginx-backend" -e stderr \
    -g "pid $work/nginx-backend/nginx.pid;" &
pids+=($!)
taskset -c 0 nginx -c "$PWD/bench/gateway/nginx-proxy.conf" -p "$work/nginx-proxy" -e stderr \
    -g "pid $work/nginx-proxy/nginx.pid;" &
pids+=($!)
taskset -c 0 haproxy -f bench/gateway/haproxy.cfg -db &
pids+=($!)
"$binary" agent --dev --dns-disable --http-addr "127.0.0.1:$AGENT_PORT" --log-level warning &
pids+=($!)
wait_for "http://127.0.0.1:$AGENT_PORT/v1/agent"
for port in 18081 18082; do
    curl -s -o /dev/null -X PUT "http://127.0.0.1:$AGENT_PORT/v1/services/payment/instances/nginx-$port" \
        -H 'Content-Type: application/json' -d "{\"address\": \"127.0.0.1\", \"port\": $port, \"tags\": [\"public\"]}"
done
taskset -c 0 "$binary" gateway --listen "127.0.0.1:$GATEWAY_PORT" --agent "http://127.0.0.1:$AGENT_PORT" \
    --access-log off --admin off --log-level warning &
pids+=($!)
wait_for "http://127.0.0.1:$GATEWAY_PORT/payment/"
wait_for "http://127.0.0.1:18080/"
wait_for "http://127.0.0.1:18090/"
for url in "http://127.0.0.1:$GATEWAY_PORT/payment/" http://127.0.0.1:18080/ http://127.0.0.1:18090/; do
    [ "$(curl -s "$url")" = ok ] || { echo "$url does not answer ok" >&2; exit 1; }
done

mkdir -p bench/out
out="bench/out/gateway-$(date -u +%Y%m%dT%H%M%SZ).md"
{
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)," \
        "Linux $(uname -r); $(swift --version 2>&1 | head -1); $(nginx -v 2>&1); $(haproxy -v | head -1)"
    echo "Proxy on CPU 0; backends (nginx, 1 worker) and wrk ($THREADS thread, $CONNECTIONS connections) on CPU 1;" \
        "${DURATION}s per run, $ROUNDS rounds."
    echo
    echo "| round | proxy | req/s | p50 | p99 | non-2xx |"
    echo "|---|---|---|---|---|---|"
    for round in $(seq 1 "$ROUNDS"); do
        for proxy in gateway nginx haproxy; do
            case $proxy in
                gateway) url="http://127.0.0.1:$GATEWAY_PORT/payment/" ;;
                nginx) url=http://127.0.0.1:18080/ ;;
                haproxy) url=http://127.0.0.1:18090/ ;;
            esac
            IFS='|' read -r name rps p50 p99 errors <<<"$(taskset -c 1 bash -c "$(declare -f wrk_run); THREADS=$THREADS CONNECTIONS=$CONNECTIONS DURATION=$DURATION wrk_run $proxy $url")"
            echo "| $round | $name | $rps | $p50 | $p99 | $errors |"
        done
    done
} | tee "$out"
