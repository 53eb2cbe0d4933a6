# Shared by the bench/*.sh scripts (sourced, not run): the release build, a work directory and the processes
# started, all cleaned up on exit, and helpers to wait for a server, start etcd and run wrk.
#
# After sourcing: $binary is the release `switchboard`, $work a temporary directory, and every PID added to
# `pids` is killed on exit.

swift build -c release --product switchboard >/dev/null
binary="$(swift build -c release --show-bin-path)/switchboard"

# The benches measure the agent's capacity from one client address: its per-caller write limit (a protection,
# 1,000 writes/s by default) would measure itself instead.
export SWITCHBOARD_WRITE_RATE_LIMIT=0

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

wait_for() { # url [method]
    for _ in $(seq 1 200); do
        curl -s -o /dev/null -X "${2:-GET}" "$1" && return 0
        sleep 0.05
    done
    echo "nothing answers at $1" >&2
    exit 1
}

# start_etcd PORT: a one-member etcd on PORT (peers on PORT+1) with its data in $work/etcd; sets etcd_pid and
# etcd_base and returns once it answers.
start_etcd() {
    local port=$1
    etcd --name bench --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$port" \
        --advertise-client-urls "http://127.0.0.1:$port" --listen-peer-urls "http://127.0.0.1:$((port + 1))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
        --initial-cluster "bench=http://127.0.0.1:$((port + 1))" --log-level error >/dev/null 2>&1 &
    etcd_pid=$!
    pids+=("$etcd_pid")
    etcd_base="http://127.0.0.1:$port"
    wait_for "$etcd_base/v3/kv/range" POST
}

# wrk_run NAME URL [extra wrk args...]: prints "NAME|req/s|p50|p99|errors" (needs THREADS, CONNECTIONS, DURATION).
wrk_run() {
    local name=$1 url=$2
    shift 2
    local output
    output=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url")
    local rps p50 p99 errors
    rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$output")
    p50=$(awk '$1 == "50%" { print $2 }' <<<"$output")
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$output")
    errors=$(awk '/Non-2xx/ { print $NF }' <<<"$output")
    echo "$name|$rps|$p50|$p99|${errors:-0}"
}
