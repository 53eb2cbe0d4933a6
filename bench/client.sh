#!/usr/bin/env bash
# Micro-benchmarks of the client library on a release build: the time of one pick from 100 instances for each
# balancer (target < 1 us), and the time of a call through ServiceClient.execute against a local backend versus
# the same call with AsyncHTTPClient directly (target: within 10%), alternating rounds in one process.
#
# Usage: bench/client.sh [picks|execute]
# The backend is a Hummingbird server on 127.0.0.1 inside the benchmark process; nothing else is started.
# Results go to stdout and to bench/out/client-<time>.md.
set -euo pipefail
cd "$(dirname "$0")/.."

swift build -c release --product SwitchboardClientBench >/dev/null
bench="$(swift build -c release --show-bin-path)/SwitchboardClientBench"

mkdir -p bench/out
out="bench/out/client-$(date -u +%Y%m%dT%H%M%SZ).md"
{
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)," \
        "Linux $(uname -r); $(swift --version 2>&1 | head -1)"
    echo
    "$bench" "$@"
} | tee "$out"
