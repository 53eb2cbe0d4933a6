#!/usr/bin/env bash
# How should the agent's cluster mode talk to etcd 3.4: its v3 JSON gateway over HTTP/1.1, or its native gRPC API?
# Measured here by what each costs etcd: etcd's own CPU seconds (utime + stime of every member, all threads, from
# /proc/PID/stat) per 1,000 requests, next to requests/s, for the write shapes the catalog will use:
#   put    one put of a ~400-byte value to a new key
#   txn    compare mod_revision = 0 on the key, then put it (create-if-absent, the shape of our writes)
#   batch  one txn of 50 such puts, no compares
# each for DURATION (10) seconds after a 1 s warm-up, with each of THREADS (1,16) client threads, on a one-member
# etcd; then the put test again on a three-member cluster (n1..n3) with thread t talking to member t mod 3. The
# transports are interleaved ABBA from one cell to the next; put at 16 threads also runs gRPC with one HTTP/2
# connection per thread (grpc-conn) beside the default of one shared channel.
#
# Usage: bench/etcd-transport.sh      (DURATION=10 THREADS=1,16 CLUSTER=1 to change; CLUSTER=0 skips the 3 members)
# Runs in about 4 minutes. Only loopback (127.0.0.1, ports 23791/23801 and 23811-23813/23821-23823); every etcd
# started here is stopped on exit. Needs Python 3 with venv and PyPI: the clients (bench/etcd_transport.py) run
# in a virtual environment at $VENV (default ${TMPDIR:-/tmp}/switchboard-bench-venv), made on the first run.
# Results go to stdout and to bench/out/etcd-transport-<time>.md (+ .jsonl with the raw figures per member).
# No Swift build: this measures etcd and the protocol, not the agent.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
THREADS=${THREADS:-1,16}
CLUSTER=${CLUSTER:-1}
VENV=${VENV:-${TMPDIR:-/tmp}/switchboard-bench-venv}
# grpcio and protobuf (upb) for the gRPC client; etcd3 (python-etcd3) only for etcd's compiled descriptors, which
# bench/etcd_transport.py reads out of it (its own modules need protobuf < 4, see there).
REQUIREMENTS=(grpcio==1.85.4 protobuf==7.36.2)
DESCRIPTORS=etcd3==0.12.0

command -v etcd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server; }
command -v curl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl; }

if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
"$VENV/bin/pip" install -q --disable-pip-version-check "${REQUIREMENTS[@]}"
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "$DESCRIPTORS"
py="$VENV/bin/python"

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_member NAME CLIENT_PORT PEER_PORT INITIAL_CLUSTER: an etcd member in the background; its PID in member_pid.
start_member() {
    local name=$1 client=$2 peer=$3 cluster=$4
    for port in "$client" "$peer"; do
        port_free "$port" || { echo "port $port on 127.0.0.1 is taken" >&2; exit 1; }
    done
    etcd --name "$name" --data-dir "$work/$name" \
        --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "switchboard-bench-$$" \
        --quota-backend-bytes 8589934592 --logger zap --log-level warn >"$work/$name.log" 2>&1 &
    member_pid=$!
    pids+=("$member_pid")
}

wait_healthy() { # client ports...
    for port in "$@"; do
        for _ in $(seq 1 200); do
            curl -sf "http://127.0.0.1:$port/health" | grep -q '"health":"true"' && continue 2
            sleep 0.1
        done
        echo "etcd on port $port is not healthy; its logs:" >&2
        tail -n 20 "$work"/*.log >&2
        exit 1
    done
}

stop_members() { # pids...
    for pid in "$@"; do kill "$pid"; done
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
    local left=()
    for pid in "${pids[@]}"; do
        [[ " $* " == *" $pid "* ]] || left+=("$pid")
    done
    pids=("${left[@]}")
}

mkdir -p bench/out
stamp=$(date -u +%Y%m%dT%H%M%SZ)
raw="bench/out/etcd-transport-$stamp.jsonl"
report="bench/out/etcd-transport-$stamp.md"
run_id="r$stamp"
started=$(date +%s)

echo "one member (127.0.0.1:23791)" >&2
start_member s1 23791 23801 "s1=http://127.0.0.1:23801"
single=$member_pid
wait_healthy 23791
probe=$("$py" bench/etcd_transport.py probe 127.0.0.1:23791)
"$py" bench/etcd_transport.py bench --label single --endpoints 127.0.0.1:23791 --pids "$single" \
    --tests put,txn,batch --threads "$THREADS" --extra grpc-conn --extra-test put --extra-threads 16 \
    --duration "$DURATION" --run-id "$run_id" --out "$raw"
server_version=$(curl -s http://127.0.0.1:23791/version)
stop_members "$single"

if [ "$CLUSTER" = 1 ]; then
    echo "three members (127.0.0.1:23811-23813)" >&2
    initial="n1=http://127.0.0.1:23821,n2=http://127.0.0.1:23822,n3=http://127.0.0.1:23823"
    members=()
    for i in 1 2 3; do
        start_member "n$i" "$((23810 + i))" "$((23820 + i))" "$initial"
        members+=("$member_pid")
    done
    wait_healthy 23811 23812 23813
    leader=$(ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:23811,127.0.0.1:23812,127.0.0.1:23813 endpoint status \
        -w table 2>/dev/null | awk -F'|' '$6 ~ /true/ { gsub(/ /, "", $2); print $2 }')
    echo "leader: $leader" >&2
    "$py" bench/etcd_transport.py bench --label cluster \
        --endpoints 127.0.0.1:23811,127.0.0.1:23812,127.0.0.1:23813 --pids "$(IFS=,; echo "${members[*]}")" \
        --tests put --threads "$THREADS" --duration "$DURATION" --run-id "$run_id" --out "$raw"
    stop_members "${members[@]}"
fi

{
    echo "# etcd transport: JSON gateway (HTTP/1.1) against gRPC, $stamp"
    echo
    echo "Command: \`DURATION=$DURATION THREADS=$THREADS CLUSTER=$CLUSTER bash bench/etcd-transport.sh\` ($(($(date +%s) - started)) s)."
    echo "Machine: nproc $(nproc), $(uname -sr); load average at the end $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "etcd: $(etcd --version | head -1) ($(etcd --version | grep '^Go Version')); server /version $server_version;"
    echo "one member, then three (n1..n3) on loopback, data dirs in $(dirname "$work") ($(findmnt -no FSTYPE -T "$work" 2>/dev/null || echo '?'))."
    [ "$CLUSTER" = 1 ] && echo "Three-member leader: ${leader:-unknown}; thread t talks to member t mod 3 (1 thread: n1 only)."
    echo "Clients: Python $("$py" -c 'import sys; print(sys.version.split()[0])'), $("$VENV/bin/pip" list 2>/dev/null |
        awk '$1 ~ /^(grpcio|protobuf|etcd3)$/ { printf "%s %s, ", $1, $2 }')http.client for JSON (one keep-alive connection per thread)."
    echo "CPU: clock ticks of $(getconf CLK_TCK)/s; \"etcd cores busy\" is etcd CPU-s per wall second; client CPU is the whole Python driver."
    echo
    "$py" bench/etcd_transport.py report "$raw"
    echo
    echo "## What the JSON gateway did (checked live against this etcd)"
    echo
    echo "$probe"
} | tee "$report"
echo >&2
echo "written: $report and $raw" >&2
