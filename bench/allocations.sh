#!/usr/bin/env bash
# Allocations per proxied exchange in the gateway, counted by ordo-one/benchmark's malloc interposer (the
# Benchmarks/ package, release build): wrk's GET through an in-memory gateway to one pooled instance and nginx's
# answer back (see Benchmarks/Benchmarks/ProxyAllocations). Counts, not times: the same build gives the same count
# on any machine, so the count is kept as a threshold and checked.
#
# Usage: bench/allocations.sh           run and print every metric (allocations, instructions, time) per exchange
#        bench/allocations.sh --check   run and compare with Benchmarks/Thresholds: exits non-zero on a rise (CI);
#                                       the thresholds are counts per sample of 1,000 exchanges
#        bench/allocations.sh --update  run and write Benchmarks/Thresholds anew (after a change that lowers it)
set -euo pipefail
cd "$(dirname "$0")/../Benchmarks"
case "${1:-}" in
    --check)
        swift package benchmark thresholds check --metric mallocCountTotal --no-progress
        ;;
    --update)
        swift package --allow-writing-to-package-directory benchmark thresholds update --metric mallocCountTotal \
            --no-progress
        ;;
    "")
        swift package benchmark --no-progress
        ;;
    *)
        echo "usage: bench/allocations.sh [--check | --update]" >&2
        exit 2
        ;;
esac
