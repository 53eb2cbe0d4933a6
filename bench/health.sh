#!/usr/bin/env bash
# Health-checking benchmark of a release-build agent, each part side by side with the peer users would pick:
#  1. heartbeats/s one agent absorbs with TTL_INSTANCES (10,000) TTL instances, against etcd lease keep-alives
#     (etcd's TTL heartbeat) for as many leases;
#  2. scheduler lateness with HTTP_CHECKS (5,000) HTTP checks at a 1 s interval against a local nginx, and the
#     CPU those checks cost, against HAProxy running the same 5,000 checks (`option httpchk`, `inter 1s`).
#
# Usage: bench/health.sh      (DURATION=10 CONNECTIONS=64 THREADS=2 TTL_INSTANCES=10000 HTTP_CHECKS=5000
#                              LATENESS_SECONDS=20 to change)
# Everything runs on 127.0.0.1; every process started here is stopped on exit. Results go to stdout and to
# bench/out/health-<time>.md.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
TTL_INSTANCES=${TTL_INSTANCES:-10000}
HTTP_CHECKS=${HTTP_CHECKS:-5000}
LATENESS_SECONDS=${LATENESS_SECONDS:-20}
AGENT_PORT=${AGENT_PORT:-17510}
ETCD_PORT=${ETCD_PORT:-12389}
NGINX_PORT=${NGINX_PORT:-18080}

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v etcd >/dev/null || need+=(etcd-server)
command -v curl >/dev/null || need+=(curl)
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

# shellcheck source=bench/common.sh
source bench/common.sh

json_field() { # json path.to.field
    python3 -c 'import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].split("."):
    value = value[key]
print(value)' "$1"
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }


# 1. Heartbeats.
"$binary" agent --dns-disable --http-addr "127.0.0.1:$AGENT_PORT" --data-dir "$work/agent" --log-level warning &
agent=$!
pids+=("$agent")
base="http://127.0.0.1:$AGENT_PORT"
wait_for "$base/v1/agent"
python3 bench/health_setup.py ttl-instances "$base" "$TTL_INSTANCES" 5m
# The first heartbeat of each instance turns it passing (a durable status change); later ones touch memory only.
python3 bench/health_setup.py heartbeat-all "$base" "$TTL_INSTANCES"
index_before=$(curl -s "$base/v1/agent" | json_field index)
rows=()
rows+=("$(INSTANCES=$TTL_INSTANCES wrk_run "agent heartbeat (PUT .../heartbeat), $TTL_INSTANCES TTL instances" \
    "$base" -s bench/wrk/heartbeat.lua)")
index_after=$(curl -s "$base/v1/agent" | json_field index)
passing=$(curl -s "$base/v1/agent" | json_field counts.passing)
kill "$agent"
wait "$agent" 2>/dev/null || true

start_etcd "$ETCD_PORT"
python3 bench/health_setup.py etcd-leases "$etcd_base" "$TTL_INSTANCES" 300 "$work/leases"
rows+=("$(LEASES=$work/leases wrk_run "etcd lease keep-alive (POST /v3/lease/keepalive), $TTL_INSTANCES leases" \
    "$etcd_base" -s bench/wrk/etcd-keepalive.lua)")
kill "$etcd_pid"
wait "$etcd_pid" 2>/dev/null || true

# 2. Scheduler lateness with HTTP checks against nginx, and the same checks in HAProxy.
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log $work/nginx/access.log;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location /health { return 200 "ok\n"; }
    }
}
EOF
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -g 'daemon off;' &
pids+=($!)
wait_for "http://127.0.0.1:$NGINX_PORT/health"
nginx_requests() { wc -l <"$work/nginx/access.log"; }

"$binary" agent --dns-disable --http-addr "127.0.0.1:$AGENT_PORT" --data-dir "$work/agent-probes" --log-level warning &
agent=$!
pids+=("$agent")
wait_for "$base/v1/agent"
python3 bench/health_setup.py http-instances "$base" "$HTTP_CHECKS" "http://127.0.0.1:$NGINX_PORT/health"
for _ in $(seq 1 300); do
    [ "$(curl -s "$base/v1/agent" | json_field counts.passing)" -eq "$HTTP_CHECKS" ] && break
    sleep 0.2
done
sleep 3
# The agent keeps the lateness of its latest 10,000 probes (2 s at 5,000 probes/s): sample it every 2 s.
ticks_before=$(cpu_ticks "$agent")
requests_before=$(nginx_requests)
window_start=$(date +%s.%N)
samples=()
for _ in $(seq 1 $((LATENESS_SECONDS / 2))); do
    sleep 2
    samples+=("$(curl -s "$base/v1/agent" | python3 -c 'import json, sys
l = json.load(sys.stdin)["health"]["probeLateness"]
print(l["p50Ms"], l["p99Ms"], l["maxMs"])')")
done
ticks_after=$(cpu_ticks "$agent")
requests_after=$(nginx_requests)
window=$(echo "$(date +%s.%N) - $window_start" | bc)
skipped=$(curl -s "$base/v1/agent" | json_field health.skippedProbes)
critical=$(curl -s "$base/v1/agent" | json_field counts.critical)
kill "$agent"
wait "$agent" 2>/dev/null || true
hz=$(getconf CLK_TCK)
agent_cpu=$(echo "scale=1; ($ticks_after - $ticks_before) * 100 / $hz / $window" | bc)
agent_rate=$(echo "($requests_after - $requests_before) / $window" | bc)
lateness=$(printf '%s\n' "${samples[@]}" | python3 -c 'import statistics, sys
rows = [list(map(float, line.split())) for line in sys.stdin if line.strip()]
p50 = statistics.median(r[0] for r in rows); p99 = statistics.median(r[1] for r in rows)
worst99 = max(r[1] for r in rows); worst = max(r[2] for r in rows)
print(f"{p50:.2f}|{p99:.2f}|{worst99:.2f}|{worst:.1f}")')

{
    echo "global"
    echo "    maxconn 4000"
    echo "defaults"
    echo "    mode http"
    echo "    timeout connect 500ms"
    echo "    timeout check 500ms"
    echo "    timeout client 5s"
    echo "    timeout server 5s"
    echo "frontend front"
    echo "    bind 127.0.0.1:$((NGINX_PORT + 1))"
    echo "    default_backend checked"
    echo "backend checked"
    echo "    option httpchk GET /health"
    for n in $(seq 1 "$HTTP_CHECKS"); do echo "    server s$n 127.0.0.1:$NGINX_PORT check inter 1s"; done
} >"$work/haproxy.cfg"
haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 &
haproxy_pid=$!
pids+=("$haproxy_pid")
sleep 5
ticks_before=$(cpu_ticks "$haproxy_pid")
requests_before=$(nginx_requests)
sleep "$LATENESS_SECONDS"
ticks_after=$(cpu_ticks "$haproxy_pid")
requests_after=$(nginx_requests)
haproxy_cpu=$(echo "scale=1; ($ticks_after - $ticks_before) * 100 / $hz / $LATENESS_SECONDS" | bc)
haproxy_rate=$(( (requests_after - requests_before) / LATENESS_SECONDS ))

mkdir -p bench/out
report="bench/out/health-$(date -u +%Y%m%dT%H%M%SZ).md"
{
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr); $(swift --version 2>/dev/null | head -1)"
    echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency; agent, etcd $(etcd --version | head -1 | awk '{ print $3 }'), nginx $(nginx -v 2>&1 | sed 's|.*/||') and $(haproxy -v | head -1 | awk '{ print $1, $3 }') on 127.0.0.1, all sharing the cores"
    echo
    echo "| heartbeats | requests/s | p50 | p99 | non-2xx |"
    echo "|---|---|---|---|---|"
    for row in "${rows[@]}"; do echo "| ${row//|/ | } |"; done
    echo
    echo "Catalog index before and after the heartbeat run: $index_before, $index_after (heartbeats wrote nothing); passing after: $passing of $TTL_INSTANCES."
    echo
    echo "| $HTTP_CHECKS HTTP checks, 1 s interval, against nginx | probes/s reaching nginx | CPU of the checker | lateness p50 | lateness p99 (median of samples) | worst p99 | worst |"
    echo "|---|---|---|---|---|---|---|"
    IFS='|' read -r l50 l99 w99 wmax <<<"$lateness"
    echo "| switchboard agent | $agent_rate | ${agent_cpu}% | ${l50} ms | ${l99} ms | ${w99} ms | ${wmax} ms |"
    echo "| HAProxy (option httpchk, inter 1s) | $haproxy_rate | ${haproxy_cpu}% | n/a | n/a | n/a | n/a |"
    echo
    echo "Agent: $skipped probes skipped (previous one still running), $critical instances critical at the end."
} | tee "$report"
