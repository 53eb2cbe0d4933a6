#!/usr/bin/env bash
# The dashboard at scale, in a real browser: a release agent holding 1,000 services and 10,000 instances, the
# services page loaded in headless Chromium, then 100 status changes a second for 10 s (the "scale" mode of
# Tests/Fixtures/dashboard_test.py, which the test suite also runs on a debug build).
#
# Prints the script's figures: the time the page took to show every service (from navigation), the page's
# main-thread lag while the changes arrive (a 50 ms timer's lateness), and how long a change took from the agent's
# answer to the page's row. No peer: Consul's and Eureka's UIs are not available on this machine.
#
# Needs chromium, chromium-driver and a Python with selenium (PYTHON, default .build/test-python/bin/python, which
# `swift test` makes from Tests/Fixtures/python-clients.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh

python=${PYTHON:-.build/test-python/bin/python}
port=17588
"$binary" agent --dev --dns-disable --http-addr "127.0.0.1:$port" --log-level warning &
pids+=("$!")
wait_for "http://127.0.0.1:$port/v1/agent"
SWITCHBOARD_BINARY="$binary" "$python" Tests/Fixtures/dashboard_test.py scale "http://127.0.0.1:$port" \
    | grep -E '^(figure|ok)'
