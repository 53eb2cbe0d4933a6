#!/usr/bin/env bash
# Formats the Swift sources in place, then lints them; exits non-zero on any lint finding.
# Usage: scripts/format.sh          (format, then lint)
#        scripts/format.sh --check  (lint only, as CI does)
set -euo pipefail
cd "$(dirname "$0")/.."
paths=(Package.swift Sources Tests Benchmarks/Package.swift Benchmarks/Benchmarks)
if [ "${1:-}" != "--check" ]; then
    swift format format --in-place --parallel --recursive "${paths[@]}"
fi
swift format lint --strict --parallel --recursive "${paths[@]}"
