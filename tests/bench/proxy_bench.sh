#!/usr/bin/env bash
# Benchmark (not a test): proxy channels through the full path
#   client -> tcp listener on node B -> peer session -> export on node A -> server
# on loopback inside a network namespace, against a direct TCP connection to
# the same server measured in the same run.
#
#   sudo tests/bench/proxy_bench.sh [BUILD_DIR] [MiB] [proxy_bench.py run options]
#   e.g. ... build 1024 --phases eight,stall --seconds 5 --log-level info
#
# Prints one table: MB/s of one channel (MiB from a source server, default
# 1024) and its ratio to direct TCP; 8 concurrent channels, each one's MB/s
# and Jain's fairness index; 7 channels next to one stalled reader vs the 8;
# cold (no session) and warm (session up) open latency, connect -> first
# byte; RSS per idle channel of both nodes with 1000 idle channels open.
# Measuring is done by proxy_bench.py (Python standard library). Everything
# it creates is named p2pbench and removed on exit; the whole run is bounded
# (20 minutes).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
MIB=${2:-1024}
shift $(( $# < 2 ? $# : 2 ))
BIN=$(readlink -f "$BUILD/p2proxy")
NS=p2pbench
[ "$(id -u)" -eq 0 ] || { echo "proxy_bench: needs root (network namespace)"; exit 1; }
[ -x "$BIN" ] || { echo "proxy_bench: no $BIN; build first"; exit 1; }
if ip netns list | grep -qw "$NS"; then
  echo "proxy_bench: namespace $NS exists: another run is going on (or run: ip netns del $NS)"
  exit 1
fi
WORK=$(mktemp -d /tmp/p2pbench.XXXXXX)

cleanup() {
  # Whatever still runs in our namespace was started by this run.
  local pids
  pids=$(ip netns pids "$NS" 2>/dev/null || true)
  for p in $pids; do kill "$p" 2>/dev/null || true; done
  [ -n "$pids" ] && sleep 0.5
  pids=$(ip netns pids "$NS" 2>/dev/null || true)
  for p in $pids; do kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
# Addresses only in 198.18.0.0/15, on the namespace's own loopback.
ip -n "$NS" addr add 198.18.250.1/32 dev lo

# 1000 idle channels: the client holds 1000 sockets, each node ~1000, the
# hello server 1000.
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] || [ "$hard" -ge 8192 ] || { echo "proxy_bench: open-file limit $hard < 8192"; exit 1; }
ulimit -n "$hard"
timeout -k 10 1200 ip netns exec "$NS" python3 tests/bench/proxy_bench.py run \
  --bin "$BIN" --work "$WORK" --mib "$MIB" "$@"
