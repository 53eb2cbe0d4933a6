#!/usr/bin/env bash
# Cluster mode on etcd: two release-build agents (`--store etcd`) on one three-member etcd 3.4, all on loopback, and
# in one run, side by side with etcd itself where there is a peer:
#   1. registrations/s through the agents (wrk, CONNECTIONS new-instance PUTs split over the two agents) against
#      raw etcd puts/s of the same JSON value straight to etcd's JSON gateway (same connections, split over the two
#      members the agents talk to); ROUNDS rounds in ABBA order, each cell DURATION seconds after a 2 s warm-up.
#   2. etcd writes while HB_INSTANCES (10,000) instances with a TTL check (HB_TTL) heartbeat for HB_SECONDS (20)
#      seconds through both agents (bench/wrk/heartbeat.lua: each agent gets heartbeats for every instance,
#      so about half reach the non-owner and are relayed), once the same load has turned every instance passing:
#      etcd's revision before and after (every write transaction is one revision), etcd's own counters, and each
#      revision of the window read back from etcd's history and grouped by the keys it wrote.
#   3. propagation: WATCHERS (1,000) SSE streams on agent B, CHANGES (200) registrations through agent A, one after
#      another; time from the write's acknowledgment to each stream delivering it. The peer: as many etcd watches on
#      member 2 and puts to member 1 (bench/cluster_driver.py, which reuses bench/watch_driver.py's stream reader).
#   4. failover: HTTP_CHECKS (200) HTTP checks (against a local nginx) and the HB_INSTANCES TTL checks spread over
#      the two agents by rendezvous hashing; kill -9 agent A, then poll agent B's GET /v1/agent until it runs all.
#
# Run order: 1, 3, 2, 4 (propagation before the TTL instances exist, failover last). Helpers: bench/cluster_driver.py,
# bench/health_setup.py, bench/wrk/cluster-register.lua, etcd-put.lua, heartbeat.lua.
# Usage: bench/cluster.sh    (DURATION=10 CONNECTIONS=64 ROUNDS=2 HB_INSTANCES=10000 HB_SECONDS=20 HB_TTL=30s
#                             WATCHERS=1000 CHANGES=200 HTTP_CHECKS=200 PORT_BASE=24300 to change)
# etcd runs with its defaults (heartbeat 100 ms, election timeout 1000 ms), data dirs in a temporary directory;
# the agents keep their member key on a 2 s lease (the agent's default). Only 127.0.0.1: etcd on PORT_BASE+11..13
# (peers +21..23), agents on +31/+32, nginx on +40. Everything started here is stopped on exit, by PID. After the
# release build (scratch path $SCRATCH, default .build-bench, so a debug build in .build is not blocked) it runs in
# about 4 minutes. Results go to stdout and bench/out/cluster-<time>.md; the agents' logs and the raw JSON beside it.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-2}
HB_INSTANCES=${HB_INSTANCES:-10000}
HB_SECONDS=${HB_SECONDS:-20}
HB_TTL=${HB_TTL:-30s}
WATCHERS=${WATCHERS:-1000}
CHANGES=${CHANGES:-200}
HTTP_CHECKS=${HTTP_CHECKS:-200}
PORT_BASE=${PORT_BASE:-24300}
SCRATCH=${SCRATCH:-$PWD/.build-bench}
PREFIX=/switchboard/

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v nginx >/dev/null || need+=(nginx)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
python3 -c 'import uvloop' 2>/dev/null || python3 -m pip install -q --disable-pip-version-check uvloop ||
    echo "uvloop not installed: the propagation driver uses asyncio's own loop" >&2
# 1,000 streams and as many connections on the driver's side, in this process tree.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "release build in $SCRATCH" >&2
swift build -c release --scratch-path "$SCRATCH" --product switchboard >/dev/null
binary="$(swift build -c release --scratch-path "$SCRATCH" --show-bin-path)/switchboard"

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
others_start=$(ps -eo pcpu=,comm= --sort=-pcpu | awk '$1 > 5 { printf "%s %s%%, ", $2, $1 }' | sed 's/, $//')
started=$(date +%s)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench/out
out="bench/out/cluster-$stamp"

work=$(mktemp -d)
pids=()
alive() { [ -e "/proc/$1" ] && [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
cleanup() {
    # Newest first, each gone (10 s at most, then kill -9) before the next: clients and agents stop before the etcd
    # members they talk to, so the agents' logs hold no shutdown noise.
    local i pid
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        pid=${pids[i]}
        kill "$pid" 2>/dev/null || continue
        for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    for name in a b; do [ -f "$work/agent-$name.log" ] && cp "$work/agent-$name.log" "$out-agent-$name.log"; done
    rm -rf "$work"
}
trap cleanup EXIT

# Other work on the machine during the run: every 5 s, the processes outside this script's process group above
# 20% CPU (ps's figure: CPU time over the process's life), for the report.
own_group=$(ps -o pgid= -p $$ | tr -d ' ')
(
    while :; do
        date +%s >>"$work/others.log"
        ps -eo pgid=,pcpu=,comm= | awk -v own="$own_group" '$1 != own && $2 > 20 { print $3 }' >>"$work/others.log" || true
        sleep 5
    done
) &
pids+=($!)

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in $((PORT_BASE + 11)) $((PORT_BASE + 12)) $((PORT_BASE + 13)) $((PORT_BASE + 21)) $((PORT_BASE + 22)) \
    $((PORT_BASE + 23)) $((PORT_BASE + 31)) $((PORT_BASE + 32)) $((PORT_BASE + 40)); do
    port_free "$port" || { echo "port $port on 127.0.0.1 is taken (set PORT_BASE)" >&2; exit 1; }
done

driver() { PYTHONDONTWRITEBYTECODE=1 python3 bench/cluster_driver.py "$@"; }
json() { python3 -c "import json, sys; d = json.loads(sys.argv[1]); print($1)" "$2"; }
cpu_ticks() { # pids...: utime + stime of all of them, in clock ticks
    local total=0 pid
    for pid in "$@"; do total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done
    echo "$total"
}
tick=$(getconf CLK_TCK)
revision() { # etcd's current revision (every write transaction adds one)
    curl -s "${etcd_urls[0]}/v3/kv/range" -d '{"key": "AA==", "limit": 1}' |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["header"]["revision"])'
}

# --- etcd: three members -----------------------------------------------------------------------------------------
etcd_urls=()
etcd_pids=()
initial="n1=http://127.0.0.1:$((PORT_BASE + 21)),n2=http://127.0.0.1:$((PORT_BASE + 22)),n3=http://127.0.0.1:$((PORT_BASE + 23))"
for i in 1 2 3; do
    client=$((PORT_BASE + 10 + i))
    peer=$((PORT_BASE + 20 + i))
    etcd --name "n$i" --data-dir "$work/n$i" \
        --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token "switchboard-cluster-$$" \
        --quota-backend-bytes 8589934592 --logger zap --log-level warn >"$work/n$i.log" 2>&1 &
    etcd_pids+=($!)
    pids+=($!)
    etcd_urls+=("http://127.0.0.1:$client")
done
for url in "${etcd_urls[@]}"; do
    for _ in $(seq 1 200); do
        curl -sf "$url/health" | grep -q '"health":"true"' && continue 2
        sleep 0.1
    done
    echo "etcd at $url is not healthy; its logs:" >&2
    tail -n 20 "$work"/n*.log >&2
    exit 1
done
leader() {
    ETCDCTL_API=3 etcdctl --endpoints "$(IFS=,; echo "${etcd_urls[*]}")" endpoint status -w table 2>/dev/null |
        awk -F'|' '$6 ~ /true/ { gsub(/ /, "", $2); print $2 }'
}
leader_start=$(leader)

# --- two agents, each talking first to its own member ------------------------------------------------------------
A="http://127.0.0.1:$((PORT_BASE + 31))"
B="http://127.0.0.1:$((PORT_BASE + 32))"
start_agent() { # name port endpoints
    "$binary" agent --write-rate-limit 0 --store etcd --etcd-endpoints "$3" --etcd-prefix "$PREFIX" --agent-id "agent-$1" \
        --http-addr "127.0.0.1:$2" --dns-disable --log-level warning >"$work/agent-$1.log" 2>&1 &
    agent_pid=$!
    pids+=("$agent_pid")
}
start_agent a $((PORT_BASE + 31)) "${etcd_urls[0]},${etcd_urls[1]},${etcd_urls[2]}"
pid_a=$agent_pid
start_agent b $((PORT_BASE + 32)) "${etcd_urls[1]},${etcd_urls[2]},${etcd_urls[0]}"
pid_b=$agent_pid
members() { curl -s "$1/v1/agent" | python3 -c 'import json, sys
try: print(len(json.load(sys.stdin)["cluster"]["members"]))
except Exception: print(0)'; }
for base in "$A" "$B"; do
    for _ in $(seq 1 300); do
        [ "$(members "$base")" = 2 ] && continue 2
        sleep 0.1
    done
    echo "agent at $base does not see both members; logs:" >&2
    tail -n 20 "$work"/agent-*.log >&2
    exit 1
done

# --- nginx, the HTTP checks' target (PEERS.md) ----------------------------------------------------------------------
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1; pid $work/nginx/nginx.pid; error_log $work/nginx/error.log; daemon off;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$((PORT_BASE + 40));
    location / { default_type text/plain; return 200 "ok"; } } }
EOF
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -e stderr 2>"$work/nginx/stderr.log" &
pids+=($!)
for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$((PORT_BASE + 40))/" && break; sleep 0.05; done

# --- 1. registrations/s --------------------------------------------------------------------------------------------
# wrk_pair NAME LUA URL1 URL2 SECONDS: one wrk per URL (1 thread, half the connections each) at the same time, the
# second with OFFSET=HB_INSTANCES/2 (for the heartbeat script); prints "req/s sum|requests|non-2xx|socket errors|
# p50 (1 / 2)|p99 (1 / 2)|cpu ms agents|cpu ms etcd|etcd revisions".
wrk_pair() {
    local name=$1 lua=$2 url1=$3 url2=$4 seconds=$5 half=$((CONNECTIONS / 2))
    local agents0 etcd0 agents1 etcd1 rev0 rev1
    rev0=$(revision)
    agents0=$(cpu_ticks "$pid_a" "$pid_b")
    etcd0=$(cpu_ticks "${etcd_pids[@]}")
    PREFIX="$name-1" OFFSET=0 wrk -t1 -c"$half" -d"${seconds}s" --latency -s "$lua" "$url1" >"$work/wrk-1.txt" &
    local w1=$!
    PREFIX="$name-2" OFFSET=$((HB_INSTANCES / 2)) wrk -t1 -c"$half" -d"${seconds}s" --latency -s "$lua" "$url2" \
        >"$work/wrk-2.txt" &
    local w2=$!
    wait "$w1" "$w2"
    agents1=$(cpu_ticks "$pid_a" "$pid_b")
    etcd1=$(cpu_ticks "${etcd_pids[@]}")
    rev1=$(revision)
    python3 - "$work/wrk-1.txt" "$work/wrk-2.txt" "$((agents1 - agents0))" "$((etcd1 - etcd0))" "$tick" \
        "$((rev1 - rev0))" <<'EOF'
import re, sys
rps = requests = non2xx = errors = 0
p50, p99 = [], []
for path in sys.argv[1:3]:
    text = open(path).read()
    rps += float(re.search(r"Requests/sec:\s+(\S+)", text).group(1))
    requests += int(re.search(r"(\d+) requests in", text).group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    non2xx += int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors += sum(map(int, m.groups())) if m else 0
    p50.append(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
    p99.append(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
tick = int(sys.argv[5])
print(f"{rps:.0f}|{requests}|{non2xx}|{errors}|{' / '.join(p50)}|{' / '.join(p99)}|"
      f"{int(sys.argv[3]) * 1000 / tick:.0f}|{int(sys.argv[4]) * 1000 / tick:.0f}|{sys.argv[6]}")
EOF
}

echo "1. registrations/s: agents against etcd puts ($ROUNDS rounds, ABBA)" >&2
reg_rows=()
warm_rows=()
run_cell() { # side round
    local side=$1 round=$2 row
    if [ "$side" = agents ]; then
        warm=$(wrk_pair "warm$round" bench/wrk/cluster-register.lua "$A" "$B" 2)
        row=$(wrk_pair "r$round" bench/wrk/cluster-register.lua "$A" "$B" "$DURATION")
    else
        warm=$(KEY_ROOT=/peer wrk_pair "warm$round" bench/wrk/etcd-put.lua "${etcd_urls[0]}" "${etcd_urls[1]}" 2)
        row=$(KEY_ROOT=/peer wrk_pair "r$round" bench/wrk/etcd-put.lua "${etcd_urls[0]}" "${etcd_urls[1]}" "$DURATION")
    fi
    warm_rows+=("$side|$round|$warm")
    reg_rows+=("$side|$round|$row")
}
for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then run_cell agents "$round"; run_cell etcd "$round"
    else run_cell etcd "$round"; run_cell agents "$round"; fi
done
# Count back: every instance registered (warm-ups included) must be in both agents' views, every peer key in etcd.
sleep 1
instances_a=$(curl -s "$A/v1/agent" | python3 -c 'import json, sys; print(json.load(sys.stdin)["instances"])')
instances_b=$(curl -s "$B/v1/agent" | python3 -c 'import json, sys; print(json.load(sys.stdin)["instances"])')
peer_keys=$(curl -s "${etcd_urls[0]}/v3/kv/range" -d "{\"key\": \"$(printf /peer/ | base64 -w0)\", \"range_end\": \"$(printf /peer0 | base64 -w0)\", \"count_only\": true}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin).get("count", 0))')
reg_summary=$(python3 - "${reg_rows[@]}" -- "${warm_rows[@]}" <<'EOF'
import sys
cells = {"agents": [], "etcd": []}
all_ok = {"agents": 0, "etcd": 0}
warm = False
for row in sys.argv[1:]:
    if row == "--":
        warm = True
        continue
    side, round_, rps, requests, non2xx, errors, p50, p99, cpu_agents, cpu_etcd, revisions = row.split("|")
    all_ok[side] += int(requests) - int(non2xx)
    if not warm:
        cells[side].append((float(rps), int(requests), int(non2xx), int(errors), float(cpu_agents), float(cpu_etcd),
                            int(revisions)))
mean = {side: sum(c[0] for c in v) / len(v) for side, v in cells.items()}
ratio = mean["agents"] / mean["etcd"]
def per(side, index):
    v = cells[side]
    return sum(c[index] for c in v) / sum(c[1] for c in v)
print(f"{mean['agents']:.0f}|{mean['etcd']:.0f}|{ratio:.2f}|{per('agents', 5):.3f}|{per('etcd', 5):.3f}|"
      f"{per('agents', 4):.3f}|{all_ok['agents']}|{all_ok['etcd']}|{1 / per('agents', 6):.1f}")
EOF
)

# --- 3. propagation (before the heartbeat phase, so no TTL expiry can overlap it) ----------------------------------
echo "3. propagation: $WATCHERS SSE streams on agent B, changes through agent A; then the etcd peer" >&2
prop_agents=$(driver propagate agents "$A" "$B" "$WATCHERS" "$CHANGES")
prop_etcd=$(driver propagate etcd "${etcd_urls[0]}" "${etcd_urls[1]}" "$WATCHERS" "$CHANGES")

# --- 2. etcd writes while HB_INSTANCES instances heartbeat ------------------------------------------------------------
echo "2. heartbeats: registering $HB_INSTANCES TTL instances ($HB_TTL) and $HTTP_CHECKS HTTP checks" >&2
reg_start=$(date +%s%N)
python3 bench/health_setup.py ttl-instances "$A" "$HB_INSTANCES" "$HB_TTL"
reg_ttl_s=$(awk -v a="$reg_start" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
python3 bench/health_setup.py http-instances "$B" "$HTTP_CHECKS" "http://127.0.0.1:$((PORT_BASE + 40))/"
# Heartbeats turn the TTL instances passing (a status change, so an etcd write each, batched): the same heartbeat
# load as the window, through both agents, until every instance of the catalog is passing in both agents' views;
# then the window starts at once, the heartbeats going on.
prime_start=$(date +%s%N)
INSTANCES=$HB_INSTANCES OFFSET=0 wrk -t1 -c$((CONNECTIONS / 2)) -d120s -s bench/wrk/heartbeat.lua "$A" \
    >/dev/null &
prime1=$!
pids+=("$prime1")
INSTANCES=$HB_INSTANCES OFFSET=$((HB_INSTANCES / 2)) wrk -t1 -c$((CONNECTIONS / 2)) -d120s \
    -s bench/wrk/heartbeat.lua "$B" >/dev/null &
prime2=$!
pids+=("$prime2")
settled=no
critical_left="?"
for _ in $(seq 1 120); do
    sleep 0.5
    critical_left=$(for base in "$A" "$B"; do curl -s "$base/v1/agent"; echo; done | python3 -c 'import json, sys
print(max(json.loads(line)["counts"]["critical"] + json.loads(line)["counts"]["warning"] for line in sys.stdin if line.strip()))')
    [ "$critical_left" = 0 ] && { settled=yes; break; }
done
prime_s=$(awk -v a="$prime_start" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
[ "$settled" = yes ] || echo "warning: $critical_left instances not passing before the heartbeat window" >&2
checks_a=$(curl -s "$A/v1/agent" | python3 -c 'import json, sys; c = json.load(sys.stdin)["health"]["checks"]; print(c["ttl"], c["http"])')
checks_b=$(curl -s "$B/v1/agent" | python3 -c 'import json, sys; c = json.load(sys.stdin)["health"]["checks"]; print(c["ttl"], c["http"])')
heartbeats_counter() { curl -s "$1/metrics" | awk '/^switchboard_heartbeats_total / { print $2 }'; }
kill "$prime1" "$prime2"
wait "$prime1" "$prime2" 2>/dev/null || true
hb_a0=$(heartbeats_counter "$A")
hb_b0=$(heartbeats_counter "$B")
agents_cpu0=$(cpu_ticks "$pid_a" "$pid_b")
etcd_cpu0=$(cpu_ticks "${etcd_pids[@]}")
stats_before=$(driver stats "${etcd_urls[@]}")
echo "   heartbeating for ${HB_SECONDS}s through both agents" >&2
hb_row=$(INSTANCES=$HB_INSTANCES wrk_pair hb bench/wrk/heartbeat.lua "$A" "$B" "$HB_SECONDS")
stats_after=$(driver stats "${etcd_urls[@]}")
agents_cpu1=$(cpu_ticks "$pid_a" "$pid_b")
etcd_cpu1=$(cpu_ticks "${etcd_pids[@]}")
hb_a1=$(heartbeats_counter "$A")
hb_b1=$(heartbeats_counter "$B")
rev0=$(json 'd["revision"]' "$stats_before")
rev1=$(json 'd["revision"]' "$stats_after")
hb_history=$(driver history "${etcd_urls[0]}" "$rev0" "$rev1" "$PREFIX")
hb_summary=$(python3 - "$stats_before" "$stats_after" "$hb_row" "$hb_a0" "$hb_a1" "$hb_b0" "$hb_b1" <<'EOF'
import json, sys
before, after = json.loads(sys.argv[1]), json.loads(sys.argv[2])
rps, requests, non2xx, errors, p50, p99, _, _, _ = sys.argv[3].split("|")
counters = float(sys.argv[5]) - float(sys.argv[4]) + float(sys.argv[7]) - float(sys.argv[6])
window = after["time"] - before["time"]
revisions = after["revision"] - before["revision"]
def delta(name, members=None):
    total = 0
    for i, (b, a) in enumerate(zip(before["members"], after["members"])):
        if members is not None and i not in members:
            continue
        if a[name] is not None and b[name] is not None:
            total += a[name] - b[name]
    return total
leader = [i for i, m in enumerate(after["members"]) if m["is_leader"] == 1]
lead = leader[:1] or [0]
# A relayed heartbeat is counted by the agent that relays it and again by the owner; a local one once. So the
# counters' sum minus the requests sent is (relayed and answered by the owner) - (relays that failed).
print(json.dumps({
    "window_s": round(window, 2), "revisions": revisions, "revisions_per_s": round(revisions / window, 2),
    "puts": delta("put", lead), "deletes": delta("delete", lead), "txns": delta("txn", lead),
    "proposals": delta("proposals_committed", lead), "keepalives": delta("keepalive_msgs"),
    "keepalives_per_s": round(delta("keepalive_msgs") / window, 2), "txn_rpcs": delta("txn_rpcs"),
    "range_rpcs": delta("range_rpcs"), "put_rpcs": delta("put_rpcs"), "lease_grants": delta("lease_grants"),
    "heartbeats_per_s": float(rps), "heartbeats": int(requests), "non2xx": int(non2xx), "socket_errors": int(errors),
    "p50": p50, "p99": p99, "relayed_net": int(counters - int(requests)),
    "writes_per_heartbeat": round(revisions / max(1, int(requests)), 6),
}))
EOF
)

# --- 4. failover ---------------------------------------------------------------------------------------------------
echo "4. failover: kill -9 agent A, poll agent B" >&2
failover=$(driver failover "$B" "$pid_a" "$HB_INSTANCES" "$HTTP_CHECKS" 30)
wait "$pid_a" 2>/dev/null || true
sleep 1
after_b=$(curl -s "$B/v1/agent" | python3 -c 'import json, sys; d = json.load(sys.stdin); c = d["health"]["checks"]
print(c["ttl"], c["http"], d["counts"]["passing"], d["counts"]["critical"])')
leader_end=$(leader)

# --- report --------------------------------------------------------------------------------------------------------
log_lines() { # file: warning-or-worse lines, by message
    [ -f "$1" ] || { echo "none"; return; }
    local n
    n=$(grep -ciE 'warning|error|critical' "$1" || true)
    echo "$n"
}
elapsed=$(($(date +%s) - started))
report="$out.md"
# The raw figures first, so a failure while writing the report loses nothing.
{
    echo "{\"registrations\": \"$reg_summary\", \"heartbeats\": $hb_summary, \"history\": $hb_history,"
    echo " \"propagation_agents\": $prop_agents, \"propagation_etcd\": $prop_etcd, \"failover\": $failover}"
} >"$out.json"
{
    echo "# Cluster mode on etcd (bench/cluster.sh), $stamp"
    echo
    echo "Command: \`DURATION=$DURATION CONNECTIONS=$CONNECTIONS ROUNDS=$ROUNDS HB_INSTANCES=$HB_INSTANCES HB_SECONDS=$HB_SECONDS HB_TTL=$HB_TTL WATCHERS=$WATCHERS CHANGES=$CHANGES HTTP_CHECKS=$HTTP_CHECKS bash bench/cluster.sh\` ($elapsed s after the build)."
    echo "Machine: nproc $(nproc), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr); $(swift --version 2>&1 | head -1)."
    samples=$(grep -c '^[0-9]' "$work/others.log" || true)
    busy=$({ grep -v '^[0-9]' "$work/others.log" || true; } | sort | uniq -c | sort -rn |
        awk '{ printf "%s in %s, ", $2, $1 }' | sed 's/, $//')
    echo "Load average at the start $load_start, at the end $(cut -d' ' -f1-3 /proc/loadavg); busy processes at the start: ${others_start:-none}; other programs above 20% CPU during the run (of $samples samples, 5 s apart): ${busy:-none}."
    echo "Layout: everything on 127.0.0.1 sharing the $(nproc) cores: etcd $(etcd --version | awk '/etcd Version/ { print $3 }') x3 (n1..n3, defaults: heartbeat 100 ms, election 1000 ms; data on $(findmnt -no FSTYPE -T "$work" 2>/dev/null || echo '?')), agent A (etcd endpoints n1,n2,n3) and agent B (n2,n3,n1), release build, \`--store etcd --dns-disable\`, member lease 2 s; wrk (one process per target, 1 thread, $((CONNECTIONS / 2)) connections each), the Python drivers and nginx (HTTP check target). Leader: $leader_start at the start, $leader_end at the end."
    echo
    echo "## 1. Registrations/s, $CONNECTIONS connections ($((CONNECTIONS / 2)) per agent / per member), ${DURATION} s per cell"
    echo
    echo "| round | target | req/s | answered | non-2xx | socket errors | p50 (1 / 2) | p99 (1 / 2) | agents CPU ms | etcd CPU ms | etcd revisions |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    for row in "${reg_rows[@]}"; do
        IFS='|' read -r side round rps requests non2xx errors p50 p99 cpua cpue revs <<<"$row"
        case $side in
        agents) target="agents A + B (PUT /v1/services/S/instances/ID)" ;;
        etcd) target="etcd n1 + n2 (POST /v3/kv/put)" ;;
        esac
        if [ "$side" = etcd ]; then cpua="-"; fi
        echo "| $round | $target | $rps | $requests | $non2xx | $errors | $p50 | $p99 | $cpua | $cpue | $revs |"
    done
    IFS='|' read -r mean_a mean_e ratio etcd_ms_a etcd_ms_e agent_ms_a ok_a ok_e per_txn <<<"$reg_summary"
    echo
    echo "Mean: agents $mean_a registrations/s, etcd $mean_e puts/s: **${ratio}x**. The agents committed $per_txn registrations per etcd transaction on average. etcd CPU per write: $etcd_ms_a ms per registration through the agents, $etcd_ms_e ms per raw put; agents' CPU per registration $agent_ms_a ms (both agents)."
    echo "Counted back: agent A holds $instances_a instances and agent B $instances_b; wrk counted $ok_a 2xx registrations (warm-ups included; a request answered after wrk stopped counting adds up to $CONNECTIONS a cell). etcd holds $peer_keys peer keys; wrk counted $ok_e 2xx puts."
    echo
    echo "## 2. etcd writes while $HB_INSTANCES instances heartbeat (${HB_SECONDS} s)"
    echo
    echo "Set-up: $HB_INSTANCES instances with a TTL check ($HB_TTL) registered through agent A in $reg_ttl_s s (16 client threads), $HTTP_CHECKS instances with an HTTP check (1 s) through agent B, then heartbeats through both agents until every instance was passing ($prime_s s; $critical_left left critical or warning), and the window right after. Checks run: agent A (ttl http) $checks_a, agent B $checks_b."
    python3 - "$hb_summary" "$hb_history" <<'EOF'
import json, sys
s, h = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print()
print("| figure | value |")
print("|---|---|")
print(f"| heartbeats sent (wrk, both agents) | {s['heartbeats']} in {s['window_s']} s, {s['heartbeats_per_s']:.0f}/s, p50 {s['p50']}, p99 {s['p99']}, non-2xx {s['non2xx']}, socket errors {s['socket_errors']} |")
print(f"| relayed to the owner (agents' heartbeat counters minus requests sent: relayed minus failed relays) | {s['relayed_net']} ({100 * s['relayed_net'] / max(1, s['heartbeats']):.0f}%) |")
print(f"| etcd revisions in the window (every write txn is one) | {s['revisions']} ({s['revisions_per_s']}/s; {s['writes_per_heartbeat']} per heartbeat) |")
print(f"| leader's mvcc counters: puts / deletes / txns, raft proposals committed | {s['puts']:.0f} / {s['deletes']:.0f} / {s['txns']:.0f}, {s['proposals']:.0f} |")
print(f"| lease keep-alives received (all members) | {s['keepalives']:.0f} ({s['keepalives_per_s']}/s) |")
print(f"| Txn / Range / Put RPCs (all members, gateway included) | {s['txn_rpcs']:.0f} / {s['range_rpcs']:.0f} / {s['put_rpcs']:.0f} |")
print()
print(f"What the {h['revisions_seen']} revisions wrote (read back from etcd's history):")
print()
for shape in h["shapes"] or [{"shape": "nothing", "revisions": 0, "events": 0}]:
    print(f"- {shape['revisions']} revision(s): {shape['shape']} ({shape['events']} events)")
EOF
    echo
    echo "CPU in the window: agents $(((agents_cpu1 - agents_cpu0) * 1000 / tick)) ms, etcd (3 members) $(((etcd_cpu1 - etcd_cpu0) * 1000 / tick)) ms."
    echo
    echo "## 3. Propagation: $WATCHERS watchers, $CHANGES changes one after another"
    echo
    echo "| path | p50 | p99 | max | from send p50 / p99 | slowest watcher per change, p50 | seen before the ack | missed |"
    echo "|---|---|---|---|---|---|---|---|"
    for pair in "agent A write, agent B SSE streams|$prop_agents" "etcd n1 put, n2 watches (POST /v3/watch)|$prop_etcd"; do
        python3 - "${pair%%|*}" "${pair#*|}" <<'EOF'
import json, sys
r = json.loads(sys.argv[2])
if "p50_ms" not in r:
    print(f"| {sys.argv[1]} | - | - | - | - | - | - | {r['missed']} |")
else:
    print(f"| {sys.argv[1]} | {r['p50_ms']} ms | {r['p99_ms']} ms | {r['max_ms']} ms | {r['send_p50_ms']} / {r['send_p99_ms']} ms "
          f"| {r['per_change_max_p50_ms']} ms | {100 * r['before_ack_share']:.1f}% | {r['missed']} |")
EOF
    done
    echo
    echo "Times run from the write's acknowledgment (its answer fully read by the driver) to each stream's delivery; a watcher on the other agent can see the change before the writer's answer arrives (negative times, the share shown)."
    echo
    echo "## 4. Failover: kill -9 agent A"
    echo
    python3 - "$failover" "$after_b" <<'EOF'
import json, sys
f = json.loads(sys.argv[1])
ttl, http, passing, critical = sys.argv[2].split()
print(f"Before: agent B ran {f['before']['ttl']} TTL and {f['before']['http']} HTTP checks; members {', '.join(f['members_before'])}.")
print(f"After kill -9 of agent A: B's member list dropped A after **{f['member_gone_s']} s**; B ran every check "
      f"({f['after']['ttl']} TTL, {f['after']['http']} HTTP) after **{f['checks_moved_s']} s** "
      f"(polled every 20 ms, {f['samples']} samples, {f['poll_errors']} failed polls). One second later: "
      f"{ttl} TTL, {http} HTTP checks; instances passing {passing}, critical {critical}.")
EOF
    echo
    echo "Agent logs (warning and above): A $(log_lines "$work/agent-a.log") lines, B $(log_lines "$work/agent-b.log") lines; kept in $out-agent-{a,b}.log."
} | tee "$report"
echo >&2
echo "written: $report, $out.json" >&2
