#!/usr/bin/env bash
# The signaling server under load (docs/benchmarks.md, "Signaling servers
# under load"): Debian's redis-server on loopback, then 1 and 3
# `p2proxy signal --redis` servers on it, each run driven by
# p2proxy_signal_load (real logins with real keys). Prints a table; asserts
# nothing. Root is needed only to raise the open-file limits.
#
#   sudo tests/bench/signal_load/run.sh [BUILD_DIR] [--quick]
#
# Sizes (environment): NODES_ONE (one server), NODES_THREE (three servers),
# NODES_FAILOVER (three servers, one of them killed; a third of them are on
# it), NODES_WIDE on SERVERS_WIDE servers (100 000 on 6: where one process
# may not hold 33 000 sockets, the 100 000 nodes need more servers), RATE (logins per second), PROBES (Signal round trips), LOG_LEVEL of
# the servers (info), ACCEPT_RATE (the servers' --accept-rate; default:
# theirs), RUNS (which of "one three failover" to run). --quick: 2 000 nodes
# in each run.
# Every process it starts is stopped by pid on exit; every wait is bounded.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
build="$root/build"
quick=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) build=$(cd "$arg" && pwd) ;;
  esac
done
p2proxy="$build/p2proxy"
load="$build/tests/p2proxy_signal_load"
for f in "$p2proxy" "$load"; do
  [[ -x "$f" ]] || { echo "run.sh: $f is missing: build first (cmake --build $build)" >&2; exit 2; }
done
if ! command -v redis-server >/dev/null; then
  if [[ $(id -u) -eq 0 ]]; then
    apt-get install -y redis-server >/dev/null
  else
    echo "run.sh: redis-server is missing: apt-get install redis-server" >&2
    exit 2
  fi
fi

RATE=${RATE:-1000}
PROBES=${PROBES:-2000}
LOG_LEVEL=${LOG_LEVEL:-info}
RUNS=${RUNS:-one three failover wide}
SERVERS_WIDE=${SERVERS_WIDE:-6}
accept=()
[[ -n "${ACCEPT_RATE:-}" ]] && accept=(--accept-rate "$ACCEPT_RATE")
if [[ $quick -eq 1 ]]; then
  NODES_ONE=${NODES_ONE:-2000}; NODES_THREE=${NODES_THREE:-2000}; NODES_FAILOVER=${NODES_FAILOVER:-2000}
  NODES_WIDE=${NODES_WIDE:-2000}
else
  NODES_ONE=${NODES_ONE:-20000}; NODES_THREE=${NODES_THREE:-100000}; NODES_FAILOVER=${NODES_FAILOVER:-30000}
  NODES_WIDE=${NODES_WIDE:-100000}
fi

# Open files: one per node in a server. Raise the limit as far as this
# machine lets us (a container may cap the hard limit) and size the runs to it.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
nofile=$(ulimit -n)
per_server=$(( nofile - 1000 ))
cap() { # NODES SERVERS_HOLDING_THEM
  local n=$1 max=$(( per_server * $2 ))
  if (( n > max )); then
    echo "run.sh: $n nodes on $2 server(s) need more than the open-file limit $nofile per server; running $max" >&2
    n=$max
  fi
  echo "$n"
}
NODES_ONE=$(cap "$NODES_ONE" 1)
NODES_THREE=$(cap "$NODES_THREE" 3)
NODES_FAILOVER=$(cap "$NODES_FAILOVER" 2) # the survivors hold them all
NODES_WIDE=$(cap "$NODES_WIDE" "$SERVERS_WIDE")

work=$(mktemp -d /tmp/p2proxy-signal-load.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # PORT PID
  for _ in $(seq 100); do
    if ! port_free "$1"; then return 0; fi
    kill -0 "$2" 2>/dev/null || { echo "run.sh: process $2 ended early" >&2; return 1; }
    sleep 0.1
  done
  echo "run.sh: nothing listens on $1 after 10 s" >&2
  return 1
}
pick_port() {
  local p
  for _ in $(seq 50); do
    p=$(( 20000 + RANDOM % 10000 ))
    if port_free "$p"; then echo "$p"; return 0; fi
  done
  return 1
}

redis_port=$(pick_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
  --protected-mode yes --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
wait_port "$redis_port" "$redis_pid"
"$p2proxy" keygen --out "$work/server.key" >/dev/null

server_pids=()
server_addrs=()
start_servers() { # COUNT
  server_pids=(); server_addrs=()
  redis-cli -p "$redis_port" FLUSHALL >/dev/null
  local i port pid
  for i in $(seq "$1"); do
    port=$(pick_port)
    "$p2proxy" --log-level "$LOG_LEVEL" signal --listen "127.0.0.1:$port" \
      --key "$work/server.key" --redis "redis://127.0.0.1:$redis_port" "${accept[@]}" \
      >"$work/server-$i.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    wait_port "$port" "$pid"
    server_pids+=("$pid"); server_addrs+=("127.0.0.1:$port")
  done
}
stop_servers() {
  local p
  for p in "${server_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${server_pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
}
join() { local IFS=,; echo "$*"; }

run_load() { # NAME SERVERS NODES [--kill 0] ...
  local name=$1 count=$2 nodes=$3
  shift 3
  echo "== $name: $nodes nodes on $count server(s)"
  start_servers "$count"
  "$load" --servers "$(join "${server_addrs[@]}")" --pids "$(join "${server_pids[@]}")" \
    --redis "127.0.0.1:$redis_port" --nodes "$nodes" --rate "$RATE" \
    --probes "$PROBES" --json "$work/$name.json" --timeout 600 "$@" || true
  stop_servers
}

echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GB; $(uptime)"
echo "open files per process: $nofile; $(redis-server --version | cut -d' ' -f1-3)"
results=()
for r in $RUNS; do
  case "$r" in
    one) run_load one 1 "$NODES_ONE" ;;
    three) run_load three 3 "$NODES_THREE" ;;
    failover) run_load failover 3 "$NODES_FAILOVER" --kill 0 ;;
    wide) run_load wide "$SERVERS_WIDE" "$NODES_WIDE" ;;
    *) echo "run.sh: unknown run $r" >&2; exit 2 ;;
  esac
  results+=("$work/$r.json")
done
echo "after: $(uptime)"

python3 "$here/table.py" "${results[@]}"
