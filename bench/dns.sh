#!/usr/bin/env bash
# DNS throughput: dnsperf against the agent's DNS and against dnsmasq serving the same records, in one run.
#
# Both servers hold one service of 5 instances: `payment.service.switchboard` A (5 addresses) and
# `_payment._tcp.service.switchboard` SRV (5 targets, with their addresses as additional records). Each server is
# pinned to CPU 0 and dnsperf to CPU 1 (taskset), so both servers get one core; rounds alternate between them.
#
# Usage: bench/dns.sh [DURATION_SECONDS=10] [ROUNDS=3]
# Needs dnsperf and dnsmasq (Debian: apt-get install dnsperf dnsmasq-base). Results go to stdout and to
# bench/out/dns-<time>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
ROUNDS=${2:-3}
AGENT_PORT=${AGENT_PORT:-17700}
AGENT_DNS_PORT=${AGENT_DNS_PORT:-17753}
DNSMASQ_PORT=${DNSMASQ_PORT:-17754}
for tool in dnsperf dnsmasq taskset; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install dnsperf dnsmasq-base util-linux" >&2; exit 1; }
done
source bench/common.sh

taskset -c 0 "$binary" agent --dev --http-addr "127.0.0.1:$AGENT_PORT" --dns-addr "127.0.0.1:$AGENT_DNS_PORT" \
    --log-level warning &
agent_pid=$!
pids+=("$agent_pid")
wait_for "http://127.0.0.1:$AGENT_PORT/v1/agent"

conf="$work/dnsmasq.conf"
cat >"$conf" <<CONF
port=$DNSMASQ_PORT
listen-address=127.0.0.1
bind-interfaces
no-resolv
no-hosts
no-poll
CONF
for i in 1 2 3 4 5; do
    curl -s -o /dev/null -X PUT "http://127.0.0.1:$AGENT_PORT/v1/services/payment/instances/p$i" \
        -H 'Content-Type: application/json' -d "{\"address\": \"10.0.0.$i\", \"port\": $((8080 + i)), \"weight\": $i}"
    echo "host-record=payment.service.switchboard,10.0.0.$i" >>"$conf"
    echo "host-record=p$i.payment.instance.switchboard,10.0.0.$i" >>"$conf"
    echo "srv-host=_payment._tcp.service.switchboard,p$i.payment.instance.switchboard,$((8080 + i)),1,$i" >>"$conf"
done
taskset -c 0 dnsmasq --keep-in-foreground --conf-file="$conf" --pid-file="$work/dnsmasq.pid" &
dnsmasq_pid=$!
pids+=("$dnsmasq_pid")
sleep 0.5

echo "payment.service.switchboard A" >"$work/a.txt"
echo "_payment._tcp.service.switchboard SRV" >"$work/srv.txt"
# Both must give the same answers before they are compared.
for port in "$AGENT_DNS_PORT" "$DNSMASQ_PORT"; do
    a=$(dig @127.0.0.1 -p "$port" payment.service.switchboard A +short | sort | tr '\n' ' ')
    srv=$(dig @127.0.0.1 -p "$port" _payment._tcp.service.switchboard SRV +short | wc -l)
    [ "$a" = "10.0.0.1 10.0.0.2 10.0.0.3 10.0.0.4 10.0.0.5 " ] && [ "$srv" = 5 ] ||
        { echo "port $port answers '$a' and $srv SRV records" >&2; exit 1; }
done

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # user + system time of a process, in clock ticks

run() { # name port queryfile pid -> "name|qps|avg_ms|lost|server CPU %|queries per server CPU-second"
    local output before after
    before=$(cpu_ticks "$4")
    output=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "$2" -d "$3" -l "$DURATION" -c 4 -q 200 2>&1)
    after=$(cpu_ticks "$4")
    local qps avg lost completed
    qps=$(awk '/Queries per second/ { printf "%.0f", $4 }' <<<"$output")
    avg=$(awk '/Average Latency/ { printf "%.3f", $4 * 1000 }' <<<"$output")
    lost=$(awk '/Queries lost/ { print $3 }' <<<"$output")
    completed=$(awk '/Queries completed/ { print $3 }' <<<"$output")
    local hz cpu_seconds
    hz=$(getconf CLK_TCK)
    cpu_seconds=$(awk -v t=$((after - before)) -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }')
    echo "$1|$qps|$avg|$lost|$(awk -v c="$cpu_seconds" -v d="$DURATION" 'BEGIN { printf "%.0f", 100 * c / d }')|$(awk -v n="$completed" -v c="$cpu_seconds" 'BEGIN { printf "%.0f", (c > 0 ? n / c : 0) }')"
}

mkdir -p bench/out
out="bench/out/dns-$(date -u +%Y%m%dT%H%M%SZ).md"
{
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)," \
        "Linux $(uname -r); $(swift --version 2>&1 | head -1); $(dnsmasq --version | head -1); dnsperf $(dnsperf -h 2>&1 | awk '/Version/ { print $2 }')"
    echo "Servers on CPU 0, dnsperf on CPU 1 (4 clients, 200 queries outstanding), ${DURATION}s per run, $ROUNDS rounds."
    echo
    echo "| round | server | query | queries/s | average latency (ms) | lost | server CPU | queries per server CPU-second |"
    echo "|---|---|---|---|---|---|---|---|"
    for round in $(seq 1 "$ROUNDS"); do
        for query in a srv; do
            for server in agent dnsmasq; do
                port=$AGENT_DNS_PORT pid=$agent_pid
                [ "$server" = dnsmasq ] && port=$DNSMASQ_PORT pid=$dnsmasq_pid
                IFS='|' read -r name qps avg lost cpu efficiency <<<"$(run "$server" "$port" "$work/$query.txt" "$pid")"
                echo "| $round | $name | ${query^^} | $qps | $avg | $lost | $cpu% | $efficiency |"
            done
        done
    done
} | tee "$out"
