#!/usr/bin/env bash
# Benchmark (not a test): raw peer-session throughput over one stream, one
# node pair on loopback inside a network namespace, clean and with 1 %
# random loss (iptables statistic drop on UDP, no netem), against direct TCP
# on the same path measured in the same run (iperf3).
#
#   sudo tests/bench/session_bench.sh [BUILD_DIR] [MiB]
#
# Prints MB/s, the ratio to direct TCP, and CPU seconds per GB of both node
# processes. Everything it creates is named p2pbench and removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
MIB=${2:-1024}
BIN=$(readlink -f "$BUILD/p2proxy")
NS=p2pbench
WORK=$(mktemp -d /tmp/p2pbench.XXXXXX)
[ "$(id -u)" -eq 0 ] || { echo "session_bench: needs root (network namespace)"; exit 1; }
[ -x "$BIN" ] || { echo "session_bench: no $BIN; build first"; exit 1; }
command -v iperf3 >/dev/null || { echo "session_bench: apt-get install iperf3"; exit 1; }

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
if ip netns list | grep -qw "$NS"; then
  echo "session_bench: namespace $NS exists: another run is going on (or run: ip netns del $NS)"
  exit 1
fi
ip netns add "$NS"
ip -n "$NS" link set lo up
# Addresses only in 198.18.0.0/15, on the namespace's own loopback.
ip -n "$NS" addr add 198.18.250.1/32 dev lo
inns() { ip netns exec "$NS" "$@"; }

echo "bench-token" > "$WORK/token"
chmod 600 "$WORK/token" # token files others can read are refused
# Started with `ip netns exec` itself (which execs p2proxy), so $! is the
# p2proxy process and cleanup can stop it.
ip netns exec "$NS" "$BIN" signal --listen 198.18.250.1:7000 --key "$WORK/signal.key" --token-file "$WORK/token" 2>"$WORK/signal.log" &
pids+=($!)
for n in a b; do
  port=$([ $n = a ] && echo 7071 || echo 7072)
  cat > "$WORK/$n.toml" <<TOML
[node]
key = "$WORK/$n.key"
[signal]
server = "198.18.250.1:7000"
token_file = "$WORK/token"
[admin]
listen = "127.0.0.1:$port"
[debug]
test_resources = true
[log]
level = "warn"
TOML
  ip netns exec "$NS" "$BIN" node --config "$WORK/$n.toml" 2>"$WORK/$n.log" &
  pids+=($!)
done
nodepid_a=${pids[1]} nodepid_b=${pids[2]}

get() { inns python3 -c "import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1],timeout=600).read().decode())" "$1"; }
for i in $(seq 1 100); do
  a=$(get http://127.0.0.1:7071/v1/status 2>/dev/null | python3 -c "import json,sys;d=json.load(sys.stdin);print(d['nodeId'] if d['signal']['state']=='online' else '')" 2>/dev/null || true)
  b=$(get http://127.0.0.1:7072/v1/status 2>/dev/null | python3 -c "import json,sys;d=json.load(sys.stdin);print(d['nodeId'] if d['signal']['state']=='online' else '')" 2>/dev/null || true)
  [ -n "$a" ] && [ -n "$b" ] && break
  sleep 0.1
done
[ -n "$a" ] && [ -n "$b" ] || { echo "session_bench: nodes did not come online"; cat "$WORK"/*.log; exit 1; }

cpu() { # utime+stime of a pid in seconds
  awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"
}

tcp_mbs() {
  inns iperf3 -s -1 -B 198.18.250.1 -p 5201 >/dev/null 2>&1 &
  local sp=$!
  sleep 0.3
  local bps
  bps=$(inns iperf3 -c 198.18.250.1 -p 5201 -t 5 -J 2>/dev/null \
        | python3 -c "import json,sys;print(json.load(sys.stdin)['end']['sum_received']['bits_per_second'])")
  wait $sp 2>/dev/null || true
  python3 -c "print(round($bps/8/1e6,1))"
}

session_mbs() { # prints "MB/s cpu_s_per_GB"
  # warm the session so the figure is the stream, not the handshake
  get "http://127.0.0.1:7071/v1/debug/pump/$b?bytes=1048576" >/dev/null
  local c0 c1 out
  c0=$(python3 -c "print($(cpu $nodepid_a)+$(cpu $nodepid_b))")
  out=$(get "http://127.0.0.1:7071/v1/debug/pump/$b?resource=discard&bytes=$((MIB*1048576))")
  c1=$(python3 -c "print($(cpu $nodepid_a)+$(cpu $nodepid_b))")
  python3 - "$out" "$c0" "$c1" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); c0, c1 = float(sys.argv[2]), float(sys.argv[3])
if r["error"] or r["streamsOk"] != 1:
    print("error", "-"); print(r, file=sys.stderr); sys.exit(0)
mb = r["sent"] / 1e6
print(round(mb / r["seconds"], 1), round((c1 - c0) / (r["sent"] / 1e9), 2))
PY
}

ratio() { python3 -c "import sys
try: print(round(float(sys.argv[1]) / float(sys.argv[2]), 2))
except ValueError: print('-')" "$1" "$2"; }

echo "p2proxy session benchmark: ${MIB} MiB over one stream, namespace loopback, $(nproc) cores"
printf "%-12s %10s %12s %14s\n" "path" "MB/s" "vs TCP" "CPU s/GB"
clean_tcp=$(tcp_mbs)
read -r s_mbs s_cpu <<<"$(session_mbs)"
printf "%-12s %10s %12s %14s\n" "tcp clean" "$clean_tcp" "1.00" "-"
printf "%-12s %10s %12s %14s\n" "p2p clean" "$s_mbs" "$(ratio "$s_mbs" "$clean_tcp")" "$s_cpu"
# 1 % random loss on every UDP packet (the session) and every TCP segment
# of iperf3 alike; the signaling link is not in the measured path.
inns iptables -A INPUT -p udp -m statistic --mode random --probability 0.01 -j DROP
inns iptables -A INPUT -p tcp --dport 5201 -m statistic --mode random --probability 0.01 -j DROP
loss_tcp=$(tcp_mbs)
read -r l_mbs l_cpu <<<"$(session_mbs)"
printf "%-12s %10s %12s %14s\n" "tcp 1% loss" "$loss_tcp" "1.00" "-"
printf "%-12s %10s %12s %14s\n" "p2p 1% loss" "$l_mbs" "$(ratio "$l_mbs" "$loss_tcp")" "$l_cpu"
