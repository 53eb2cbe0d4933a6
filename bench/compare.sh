#!/usr/bin/env bash
# Runs benchmark scripts against a base commit and against this tree, alternating, in one run: each script runs in
# the base tree (a git worktree of BASE_REF under .build-baseline/, built in release there), then here, ROUNDS times.
# Each script's own peers (etcd, dnsmasq, NSD, nginx, HAProxy) run in every one of those runs, so each figure comes
# with the peer's figure from the same minute.
#
# Usage: bench/compare.sh BASE_REF [SCRIPT ...]   (default scripts: registry dns gateway client; ROUNDS=2)
# Results go to stdout and to bench/out/compare-<time>.md; each script also keeps its own report in its tree's
# bench/out/.
set -euo pipefail
cd "$(dirname "$0")/.."
base_ref=${1:?usage: bench/compare.sh BASE_REF [SCRIPT ...]}
shift
scripts=("$@")
[ ${#scripts[@]} -gt 0 ] || scripts=(registry dns gateway client)
rounds=${ROUNDS:-2}

tree=.build-baseline/tree
if [ -d "$tree" ]; then
    git -C "$tree" checkout -q --detach "$base_ref"
else
    git worktree add -q --detach "$tree" "$base_ref"
fi
base=$(git -C "$tree" rev-parse --short HEAD)
here=$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo "+changes")

# Both trees built before the first measurement, so no build runs beside a benchmark.
(cd "$tree" && swift build -c release --product switchboard >/dev/null && \
    swift build -c release --product SwitchboardClientBench >/dev/null)
swift build -c release --product switchboard >/dev/null
swift build -c release --product SwitchboardClientBench >/dev/null

mkdir -p bench/out
out="bench/out/compare-$(date -u +%Y%m%dT%H%M%SZ).md"
{
    echo "# bench/compare.sh $base_ref ${scripts[*]}: base $base against $here, $rounds rounds, alternating"
    echo
    for round in $(seq 1 "$rounds"); do
        for script in "${scripts[@]}"; do
            echo "## $script, round $round, base ($base)"
            echo
            (cd "$tree" && bash "bench/$script.sh")
            echo
            echo "## $script, round $round, this tree ($here)"
            echo
            bash "bench/$script.sh"
            echo
        done
    done
} 2>&1 | tee "$out"
