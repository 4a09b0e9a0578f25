#!/bin/sh
# The latency benchmark (docs/benchmarks.md, "Latency"): prints, asserts nothing.
#   sudo tests/bench/latency/run.sh [--bin build/p2proxy] [--quick] [--json FILE] ...
# LATENCY_QUICK=1: a smoke run; LATENCY_RTSP_SECONDS=S: seconds per stream row.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
exec python3 "$here/latency.py" "$@"
