#!/usr/bin/env bash
# p2proxy lab: real NATs on one machine, built from network namespaces (see README.md here and
# docs ARCHITECTURE §8). Everything lives in namespaces named PREFIX-{pub,natA,natB,hostA,hostB};
# all addresses are in 198.18.0.0/15; nothing touches the default namespace's networking.
#
#   lab.sh up     [--nat-a KIND] [--nat-b KIND] [--inbound drop|accept] [--udp-timeout S]
#                 [--udp-timeout-a S] [--udp-timeout-b S] [--no-turn] [--prefix NAME]
#                 KIND: eim (default) | sym | none | udp-blocked
#   lab.sh down   [--prefix NAME]
#   lab.sh exec   HOST cmd...            HOST: pub natA natB hostA hostB
#   lab.sh impair LINK [--loss PCT] [--rate MBIT] [--delay MS] [--jitter MS] [--dir up|down|both]
#                 [--udp-timeout S] [--clear]          LINK: natA | natB (also a, b, hostA, hostB)
#   lab.sh spawn  HOST NAME cmd...       background process, tracked (killed by down)
#   lab.sh kill   NAME
#   lab.sh status | addrs | delayer-path | build-delayer   [--prefix NAME]
set -euo pipefail

LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$LAB_DIR/../.." && pwd)"
RUN_ROOT="/run/p2proxy-lab"
PREFIX="${P2PROXY_LAB_PREFIX:-p2p}"
T=10  # seconds: bound on every single tool invocation

# --- addresses (identical in every prefix: namespaces isolate them) --------------------------
PUB_IP=198.18.0.1      # signaling server, coturn
PUB_IP2=198.18.0.10    # a second "internet" address (mapping-behaviour tests, a second server)
NATA_WAN=198.18.0.2
NATB_WAN=198.18.0.3
NATA_LAN=198.18.1.1
NATB_LAN=198.18.2.1
HOSTA_IP=198.18.1.2
HOSTB_IP=198.18.2.2
TURN_PORT=3478
TURN_USER=lab
TURN_PASS=lab-secret
TURN_REALM=p2proxy.lab
TURN_MIN_PORT=49152
TURN_MAX_PORT=49199
NFQ_NUM=0

HOSTS=(pub natA natB hostA hostB)

die() { echo "lab.sh: $*" >&2; exit 1; }
log() { echo "lab.sh: $*" >&2; }
run() { timeout "$T" "$@"; }
ns() { echo "$PREFIX-$1"; }
nsx() { local n; n="$(ns "$1")"; shift; timeout "$T" ip netns exec "$n" "$@"; }
state_dir() { echo "$RUN_ROOT/$PREFIX"; }

check_prefix() {
  [[ "$PREFIX" =~ ^[A-Za-z][A-Za-z0-9_-]{0,19}$ ]] || die "bad prefix '$PREFIX' (letters, digits, _ -; max 20)"
}
need_root() { [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"; }

host_ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$(ns "$1")"; }

router_of() {
  case "$1" in
    natA|a|A|hostA) echo natA ;;
    natB|b|B|hostB) echo natB ;;
    *) die "unknown link '$1' (natA or natB)" ;;
  esac
}

# --- background processes -------------------------------------------------------------------
# start_bg HOST NAME cmd...: runs cmd inside HOST's namespace, pid in STATE/NAME.pid, log in NAME.log
start_bg() {
  local host="$1" name="$2"; shift 2
  local sd; sd="$(state_dir)"
  mkdir -p "$sd"
  [[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad process name '$name'"
  ip netns exec "$(ns "$host")" "$@" </dev/null >"$sd/$name.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$sd/$name.pid"
  echo "$pid"
}

# pid_is_ours PID: the process lives in one of this prefix's namespaces
pid_is_ours() {
  local pid="$1" id
  [ -d "/proc/$pid" ] || return 1
  id="$(run ip netns identify "$pid" 2>/dev/null || true)"
  [[ "$id" == "$PREFIX-"* ]]
}

kill_pid() {  # TERM, wait up to 3 s, then KILL (only our own pids)
  local pid="$1" i
  pid_is_ours "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 30; i++)); do
    [ -d "/proc/$pid" ] || return 0
    # a zombie of ours counts as gone
    grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

stop_named() {  # stop_named NAME
  local sd pf
  sd="$(state_dir)"; pf="$sd/$1.pid"
  [ -f "$pf" ] || return 0
  kill_pid "$(cat "$pf")"
  rm -f "$pf"
}

# --- delayer --------------------------------------------------------------------------------
find_delayer() {
  local c
  if [ -n "${P2PROXY_NFQ_DELAYER:-}" ] && [ -x "$P2PROXY_NFQ_DELAYER" ]; then
    echo "$P2PROXY_NFQ_DELAYER"; return 0
  fi
  # newest build first
  c="$(ls -t "$REPO_DIR"/build*/tests/nfq_delayer "$REPO_DIR"/build*/nfq_delayer \
       "$RUN_ROOT/bin/nfq_delayer" 2>/dev/null | head -n1 || true)"
  [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
  return 1
}

cmd_build_delayer() {
  need_root
  mkdir -p "$RUN_ROOT/bin"
  timeout 120 g++ -std=c++17 -O2 -Wall -Wextra -o "$RUN_ROOT/bin/nfq_delayer" \
    "$LAB_DIR/delayer.cpp" -lnetfilter_queue -lnfnetlink \
    || die "build failed (apt-get install libnetfilter-queue-dev g++)"
  echo "$RUN_ROOT/bin/nfq_delayer"
}

# --- down -----------------------------------------------------------------------------------
cmd_down() {
  check_prefix
  need_root
  set +e
  local sd pf h n pids p i
  sd="$(state_dir)"
  # 1. tracked processes (coturn, delayers, spawned)
  if [ -d "$sd" ]; then
    for pf in "$sd"/*.pid; do
      [ -f "$pf" ] || continue
      kill_pid "$(cat "$pf" 2>/dev/null)"
      rm -f "$pf"
    done
  fi
  # 2. anything else still running inside our namespaces (started via exec, by tests...)
  for h in "${HOSTS[@]}"; do
    n="$(ns "$h")"
    ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$n" || continue
    pids="$(run ip netns pids "$n" 2>/dev/null)"
    for p in $pids; do kill -TERM "$p" 2>/dev/null; done
    for ((i = 0; i < 20; i++)); do
      pids="$(run ip netns pids "$n" 2>/dev/null)"
      [ -z "$pids" ] && break
      sleep 0.1
    done
    for p in $pids; do kill -KILL "$p" 2>/dev/null; done
  done
  # 3. the namespaces (their links, nft tables, qdiscs and conntrack go with them)
  for h in "${HOSTS[@]}"; do
    n="$(ns "$h")"
    if ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$n"; then
      run ip netns del "$n" || log "could not delete namespace $n"
    fi
  done
  rm -rf "$sd"
  rmdir "$RUN_ROOT" 2>/dev/null  # only if empty
  set -e
  return 0
}

# --- up -------------------------------------------------------------------------------------
disable_offloads() {  # HOST DEV...
  local h="$1" d; shift
  for d in "$@"; do
    nsx "$h" ethtool -K "$d" tso off gso off gro off >/dev/null 2>&1 \
      || nsx "$h" ethtool -K "$d" gso off gro off >/dev/null 2>&1 \
      || log "warning: could not turn offloads off on $h/$d (is ethtool installed?)"
  done
}

set_udp_timeout() {  # ROUTER SECONDS
  nsx "$1" sysctl -qw net.netfilter.nf_conntrack_udp_timeout="$2" \
    net.netfilter.nf_conntrack_udp_timeout_stream="$2" >/dev/null
}

# router_rules ROUTER KIND INBOUND
router_rules() {
  local r="$1" kind="$2" inbound="$3" masq="" fwd_in="" input_in="" udp_block=""
  case "$kind" in
    eim|udp-blocked) masq='oifname "wan" masquerade' ;;
    sym) masq='oifname "wan" masquerade fully-random' ;;
    none) masq='' ;;
    *) die "unknown NAT kind '$kind' (eim sym none udp-blocked)" ;;
  esac
  if [ "$kind" != none ]; then
    # Home-router behaviour: only replies come in. Forwarded (to the LAN) and local (to the
    # router's WAN address) unsolicited packets are dropped before conntrack confirms them, so an
    # early inbound probe leaves no conntrack entry that would change the host's later mapping.
    fwd_in='iifname "wan" ct state established,related accept
            iifname "wan" drop'
    if [ "$inbound" = drop ]; then
      input_in='iifname "wan" ct state established,related accept
                iifname "wan" icmp type echo-request accept
                iifname "wan" drop'
    fi
  fi
  [ "$kind" = udp-blocked ] && udp_block='iifname "lan" meta l4proto udp drop'
  nsx "$r" nft -f - <<EOF
table ip lab {
  chain impair {
    type filter hook forward priority -50; policy accept;
  }
  chain forward {
    type filter hook forward priority 0; policy accept;
    $udp_block
    $fwd_in
  }
  chain input {
    type filter hook input priority 0; policy accept;
    $input_in
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    $masq
  }
}
EOF
}

start_turn() {
  local sd pid i
  sd="$(state_dir)"
  command -v turnserver >/dev/null || { log "turnserver not installed: no coturn (apt-get install coturn)"; return 0; }
  # -n: no config file. 198.18.0.0/15 is allowed explicitly so relaying to lab peers never
  # depends on coturn's defaults. Long-term credentials, no TLS/DTLS, no CLI.
  pid="$(start_bg pub turnserver turnserver -n \
    --listening-ip "$PUB_IP" --relay-ip "$PUB_IP" --listening-port "$TURN_PORT" \
    --min-port "$TURN_MIN_PORT" --max-port "$TURN_MAX_PORT" \
    --lt-cred-mech --user "$TURN_USER:$TURN_PASS" --realm "$TURN_REALM" \
    --fingerprint --no-tls --no-dtls --no-cli --no-rfc5780 --no-software-attribute \
    --allowed-peer-ip=198.18.0.0-198.19.255.255 \
    --userdb "$sd/turndb" --pidfile "$sd/turnserver.pidfile" \
    --log-file "$sd/coturn.log" --simple-log --no-stdout-log --log-binding -v)"
  for ((i = 0; i < 50; i++)); do
    if nsx pub ss -Hlun "src $PUB_IP:$TURN_PORT" 2>/dev/null | grep -q .; then
      return 0
    fi
    [ -d "/proc/$pid" ] || break
    sleep 0.2
  done
  die "coturn did not start (see $sd/coturn.log and $sd/turnserver.log)"
}

cmd_up() {
  local nat_a=eim nat_b=eim inbound=drop udp_t="" udp_ta="" udp_tb="" turn=1
  while [ $# -gt 0 ]; do
    case "$1" in
      --nat-a) nat_a="$2"; shift 2 ;;
      --nat-b) nat_b="$2"; shift 2 ;;
      --inbound) inbound="$2"; shift 2 ;;
      --udp-timeout) udp_t="$2"; shift 2 ;;
      --udp-timeout-a) udp_ta="$2"; shift 2 ;;
      --udp-timeout-b) udp_tb="$2"; shift 2 ;;
      --no-turn) turn=0; shift ;;
      *) die "up: unknown option '$1'" ;;
    esac
  done
  check_prefix
  need_root
  for k in "$nat_a" "$nat_b"; do
    case "$k" in eim|sym|none|udp-blocked) ;; *) die "unknown NAT kind '$k'" ;; esac
  done
  case "$inbound" in drop|accept) ;; *) die "--inbound drop|accept" ;; esac
  for k in "$udp_t" "$udp_ta" "$udp_tb"; do
    [ -z "$k" ] || [[ "$k" =~ ^[1-9][0-9]{0,5}$ ]] || die "--udp-timeout SECONDS (a positive integer)"
  done
  cmd_down
  # a partial up is undone (die() and set -e failures both exit non-zero)
  trap 'rc=$?; if [ $rc -ne 0 ]; then log "up failed; cleaning up"; cmd_down; fi' EXIT
  mkdir -p "$(state_dir)"

  local h
  for h in "${HOSTS[@]}"; do
    run ip netns add "$(ns "$h")"
    nsx "$h" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 >/dev/null
    nsx "$h" ip link set lo up
  done

  # pub: the "internet", a bridge every router's WAN is plugged into
  nsx pub ip link add br0 type bridge
  nsx pub ip link set br0 up
  nsx pub ip addr add "$PUB_IP/24" dev br0
  nsx pub ip addr add "$PUB_IP2/24" dev br0
  nsx pub sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 \
    net.ipv4.conf.br0.send_redirects=0 >/dev/null

  local side r host wan lan hip kind tmo
  for side in A B; do
    r="nat$side"; host="host$side"
    if [ "$side" = A ]; then wan=$NATA_WAN; lan=$NATA_LAN; hip=$HOSTA_IP; kind=$nat_a; tmo=${udp_ta:-$udp_t}
    else wan=$NATB_WAN; lan=$NATB_LAN; hip=$HOSTB_IP; kind=$nat_b; tmo=${udp_tb:-$udp_t}; fi
    # veths are created inside the namespaces directly
    nsx "$r" ip link add wan type veth peer name "$r" netns "$(ns pub)"
    nsx "$r" ip link add lan type veth peer name eth0 netns "$(ns "$host")"
    nsx pub ip link set "$r" master br0
    nsx pub ip link set "$r" up
    nsx "$r" ip addr add "$wan/24" dev wan
    nsx "$r" ip addr add "$lan/24" dev lan
    nsx "$r" ip link set wan up
    nsx "$r" ip link set lan up
    nsx "$r" ip route add default via "$PUB_IP"
    nsx "$r" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 >/dev/null
    nsx "$host" ip addr add "$hip/24" dev eth0
    nsx "$host" ip link set eth0 up
    nsx "$host" ip route add default via "$lan"
    disable_offloads "$r" wan lan
    disable_offloads "$host" eth0
    disable_offloads pub "$r"
    router_rules "$r" "$kind" "$inbound"
    [ -n "$tmo" ] && set_udp_timeout "$r" "$tmo"
  done
  disable_offloads pub br0
  # pub routes the LANs to their routers, which drop what is unsolicited:
  # a packet to a NATed host's private address vanishes, as on the
  # internet, instead of failing at once with "Network is unreachable"
  # (which made coturn drop the whole allocation when ICE relayed a check
  # towards a peer's host candidate).
  nsx pub ip route replace 198.18.1.0/24 via "$NATA_WAN"
  nsx pub ip route replace 198.18.2.0/24 via "$NATB_WAN"
  # none: the host's LAN is public and routed (no NAT, no filtering)
  if [ "$nat_a" = none ]; then
    nsx natB ip route add 198.18.1.0/24 via "$NATA_WAN"
  fi
  if [ "$nat_b" = none ]; then
    nsx natA ip route add 198.18.2.0/24 via "$NATB_WAN"
  fi
  echo "nat-a=$nat_a nat-b=$nat_b inbound=$inbound" >"$(state_dir)/config"

  [ "$turn" = 1 ] && start_turn
  trap - EXIT
  log "up: prefix $PREFIX (nat-a $nat_a, nat-b $nat_b, inbound $inbound)"
}

# --- impair ---------------------------------------------------------------------------------
dir_match() {  # up: host->internet (in on lan), down: internet->host (in on wan)
  case "$1" in
    up) echo 'iifname "lan"' ;;
    down) echo 'iifname "wan"' ;;
    both) echo '' ;;
    *) die "--dir up|down|both" ;;
  esac
}

set_loss() {  # ROUTER PCT DIR
  local r="$1" pct="$2" dir="$3" n m
  nsx "$r" nft flush chain ip lab impair
  n="$(awk -v p="$pct" 'BEGIN { if (p !~ /^[0-9]+(\.[0-9]+)?$/ || p > 100) exit 1; printf "%d", p * 1000 + 0.5 }')" \
    || die "--loss PCT (0..100)"
  [ "$n" -eq 0 ] && return 0
  m="$(dir_match "$dir")"
  nsx "$r" nft add rule ip lab impair $m numgen random mod 100000 '<' "$n" counter drop
}

set_rate() {  # ROUTER MBIT DIR
  local r="$1" mbit="$2" dir="$3" d burst
  for d in wan lan; do nsx "$r" tc qdisc del dev "$d" root >/dev/null 2>&1 || true; done
  awk -v m="$mbit" 'BEGIN { exit !(m ~ /^[0-9]+(\.[0-9]+)?$/) }' || die "--rate MBIT"
  awk -v m="$mbit" 'BEGIN { exit !(m > 0) }' || return 0
  # burst: 4 ms worth of bytes, at least 10 full-size packets
  burst="$(awk -v m="$mbit" 'BEGIN { b = m * 1000000 / 8 * 0.004; if (b < 15140) b = 15140; printf "%d", b }')"
  # egress on wan shapes the upload (host->internet), on lan the download
  local devs=()
  case "$dir" in up) devs=(wan) ;; down) devs=(lan) ;; both) devs=(wan lan) ;; *) die "--dir up|down|both" ;; esac
  for d in "${devs[@]}"; do
    nsx "$r" tc qdisc replace dev "$d" root tbf rate "${mbit}mbit" burst "$burst" latency 100ms
  done
}

set_delay() {  # ROUTER MS JITTER DIR
  local r="$1" ms="$2" jit="$3" dir="$4" bin pid i ifs=()
  [[ "$ms" =~ ^[0-9]+$ && "$jit" =~ ^[0-9]+$ ]] || die "--delay/--jitter MS (integers)"
  # remove the old queue rules first, then the old delayer (it releases what it holds)
  nsx "$r" iptables -w 5 -t mangle -D FORWARD -j LABDELAY >/dev/null 2>&1 || true
  nsx "$r" iptables -w 5 -t mangle -F LABDELAY >/dev/null 2>&1 || true
  nsx "$r" iptables -w 5 -t mangle -X LABDELAY >/dev/null 2>&1 || true
  stop_named "$r-delayer"
  [ "$ms" -eq 0 ] && [ "$jit" -eq 0 ] && return 0
  bin="$(find_delayer)" || die "nfq_delayer not built (cmake target nfq_delayer, or: lab.sh build-delayer)"
  pid="$(start_bg "$r" "$r-delayer" "$bin" --queue "$NFQ_NUM" --delay "$ms" --jitter "$jit")"
  for ((i = 0; i < 30; i++)); do
    grep -q '^nfq_delayer: queue' "$(state_dir)/$r-delayer.log" 2>/dev/null && break
    [ -d "/proc/$pid" ] || die "nfq_delayer exited: $(cat "$(state_dir)/$r-delayer.log")"
    sleep 0.1
  done
  [ -d "/proc/$pid" ] || die "nfq_delayer exited: $(cat "$(state_dir)/$r-delayer.log")"
  # The kernel has no nft `queue` expression here (CONFIG_NFT_QUEUE off), but xt_NFQUEUE works
  # through iptables-nft. --queue-bypass: if the delayer dies, packets pass instead of vanishing.
  case "$dir" in up) ifs=(-i lan) ;; down) ifs=(-i wan) ;; both) ifs=() ;; *) die "--dir up|down|both" ;; esac
  nsx "$r" iptables -w 5 -t mangle -N LABDELAY
  nsx "$r" iptables -w 5 -t mangle -A LABDELAY "${ifs[@]}" -j NFQUEUE --queue-num "$NFQ_NUM" --queue-bypass
  nsx "$r" iptables -w 5 -t mangle -A FORWARD -j LABDELAY
}

cmd_impair() {
  [ $# -ge 1 ] || die "impair LINK [--loss PCT] [--rate MBIT] [--delay MS] [--jitter MS] [--dir up|down|both] [--udp-timeout S] [--clear]"
  local link="$1"; shift
  local loss="" rate="" delay="" jitter=0 dir=both udp_t="" clear=0 r
  while [ $# -gt 0 ]; do
    case "$1" in
      --loss) loss="$2"; shift 2 ;;
      --rate) rate="$2"; shift 2 ;;
      --delay) delay="$2"; shift 2 ;;
      --jitter) jitter="$2"; shift 2 ;;
      --dir) dir="$2"; shift 2 ;;
      --udp-timeout) udp_t="$2"; shift 2 ;;
      --clear) clear=1; shift ;;
      *) die "impair: unknown option '$1'" ;;
    esac
  done
  check_prefix
  need_root
  r="$(router_of "$link")"
  host_ns_exists "$r" || die "lab '$PREFIX' is not up"
  if [ -n "$delay" ] && [ "$delay" != 0 ]; then  # fail before changing anything
    find_delayer >/dev/null || die "nfq_delayer not built (cmake target nfq_delayer, or: lab.sh build-delayer)"
  fi
  [ -z "$udp_t" ] || [[ "$udp_t" =~ ^[1-9][0-9]{0,5}$ ]] || die "--udp-timeout SECONDS (a positive integer)"
  if [ "$clear" = 1 ]; then
    set_loss "$r" 0 both; set_rate "$r" 0 both; set_delay "$r" 0 0 both
  fi
  [ -n "$loss" ] && set_loss "$r" "$loss" "$dir"
  [ -n "$rate" ] && set_rate "$r" "$rate" "$dir"
  [ -n "$delay" ] && set_delay "$r" "$delay" "$jitter" "$dir"
  [ -n "$udp_t" ] && set_udp_timeout "$r" "$udp_t"
  return 0
}

# --- exec / spawn / status ------------------------------------------------------------------
check_host() {
  local h
  for h in "${HOSTS[@]}"; do [ "$h" = "$1" ] && return 0; done
  die "unknown host '$1' (${HOSTS[*]})"
}

cmd_exec() {
  [ $# -ge 2 ] || die "exec HOST cmd..."
  check_prefix
  check_host "$1"
  local n; n="$(ns "$1")"; shift
  exec ip netns exec "$n" "$@"
}

cmd_spawn() {
  [ $# -ge 3 ] || die "spawn HOST NAME cmd..."
  check_prefix; need_root; check_host "$1"
  host_ns_exists "$1" || die "lab '$PREFIX' is not up"
  local h="$1" name="$2"; shift 2
  stop_named "$name"
  start_bg "$h" "$name" "$@"
}

cmd_kill() {
  [ $# -eq 1 ] || die "kill NAME"
  check_prefix; need_root
  stop_named "$1"
}

cmd_addrs() {
  cat <<EOF
PUB_IP=$PUB_IP
PUB_IP2=$PUB_IP2
NATA_WAN=$NATA_WAN
NATB_WAN=$NATB_WAN
NATA_LAN=$NATA_LAN
NATB_LAN=$NATB_LAN
HOSTA_IP=$HOSTA_IP
HOSTB_IP=$HOSTB_IP
TURN_PORT=$TURN_PORT
TURN_USER=$TURN_USER
TURN_PASS=$TURN_PASS
TURN_REALM=$TURN_REALM
NS_PUB=$(ns pub)
NS_NATA=$(ns natA)
NS_NATB=$(ns natB)
NS_HOSTA=$(ns hostA)
NS_HOSTB=$(ns hostB)
EOF
}

cmd_status() {
  check_prefix; need_root
  local sd h pf; sd="$(state_dir)"
  echo "prefix: $PREFIX"
  [ -f "$sd/config" ] && echo "config: $(cat "$sd/config")"
  for h in "${HOSTS[@]}"; do
    if host_ns_exists "$h"; then
      echo "== $(ns "$h")"
      nsx "$h" ip -br addr | sed 's/^/   /'
      case "$h" in
        nat*)
          nsx "$h" nft list table ip lab 2>/dev/null | sed 's/^/   /'
          nsx "$h" tc qdisc show 2>/dev/null | grep -v -e noqueue -e pfifo_fast | sed 's/^/   /' || true
          nsx "$h" iptables -w 5 -t mangle -S LABDELAY 2>/dev/null | sed 's/^/   /' || true
          echo "   udp timeouts: $(nsx "$h" sysctl -n net.netfilter.nf_conntrack_udp_timeout) / $(nsx "$h" sysctl -n net.netfilter.nf_conntrack_udp_timeout_stream) s, conntrack entries: $(nsx "$h" sysctl -n net.netfilter.nf_conntrack_count)"
          ;;
      esac
    else
      echo "== $(ns "$h") (absent)"
    fi
  done
  if [ -d "$sd" ]; then
    for pf in "$sd"/*.pid; do
      [ -f "$pf" ] || continue
      local p; p="$(cat "$pf")"
      if [ -d "/proc/$p" ]; then echo "process $(basename "$pf" .pid): pid $p running"
      else echo "process $(basename "$pf" .pid): pid $p gone"; fi
    done
  fi
}

# --- main -----------------------------------------------------------------------------------
while [ $# -gt 0 ]; do  # global options before the command
  case "$1" in
    --prefix) PREFIX="$2"; shift 2 ;;
    --prefix=*) PREFIX="${1#--prefix=}"; shift ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { sed -n '2,16p' "$0"; exit 2; }
CMD="$1"; shift
# --prefix may appear anywhere before a command's own argv (not inside exec/spawn's cmd)
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX="$2"; shift 2 ;;
    --prefix=*) PREFIX="${1#--prefix=}"; shift ;;
    *)
      if [ "$CMD" = exec ] || [ "$CMD" = spawn ]; then ARGS+=("$@"); break; fi
      ARGS+=("$1"); shift ;;
  esac
done
set -- "${ARGS[@]+"${ARGS[@]}"}"

case "$CMD" in
  up) cmd_up "$@" ;;
  down) cmd_down ;;
  exec) cmd_exec "$@" ;;
  impair) cmd_impair "$@" ;;
  spawn) cmd_spawn "$@" ;;
  kill) cmd_kill "$@" ;;
  status) cmd_status ;;
  addrs) check_prefix; cmd_addrs ;;
  delayer-path) find_delayer || die "nfq_delayer not found (build target nfq_delayer, or lab.sh build-delayer)" ;;
  build-delayer) cmd_build_delayer ;;
  -h|--help|help) sed -n '2,16p' "$0" ;;
  *) die "unknown command '$CMD'" ;;
esac
