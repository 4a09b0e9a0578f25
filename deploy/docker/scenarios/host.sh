#!/bin/bash
# The roles of the Docker scenarios' hosts (the scenario image's entrypoint).
#
#   scenario-host router cone|symmetric WAN_ADDRESS   a home router: NAT out of the interface
#                                                     holding WAN_ADDRESS, nothing unsolicited in
#   scenario-host lan GATEWAY ROLE ARGS...            a host on a LAN: default route via the
#                                                     LAN's router, then ROLE
#   scenario-host signal LISTEN                       the signaling server (token from $TOKEN)
#   scenario-host coturn ADDRESS                      coturn, user $TURN_USER:$TURN_PASSWORD
#   scenario-host node CONFIG                         a p2proxy node
#   scenario-host camera                              the RTSP test camera on :8554 (640x360)
#   scenario-host web                                 an HTTP server on :8080 with a 64 MiB file
#
# Services run as the unprivileged user p2proxy with no capabilities; only the
# routers and the route set-up of every host use NET_ADMIN, before that.
set -euo pipefail

drop() { # run "$@" as p2proxy, no capabilities, no new privileges
  export HOME=/var/lib/p2proxy USER=p2proxy
  exec setpriv --reuid=p2proxy --regid=p2proxy --init-groups --inh-caps=-all \
    --bounding-set=-all --no-new-privs "$@"
}

role=${1:?role}
shift
# Docker gives every container a default route to the Docker host, which may
# forward between the networks: that would be a way around the NAT routers.
# No host keeps it; a LAN host's only way out is its router ("lan" below).
[ -n "${SCENARIO_ROUTED:-}" ] || ip route del default 2>/dev/null || true
case "$role" in
  router)
    kind=$1 wan_addr=$2
    wan=$(ip -o -4 addr show | awk -v a="$wan_addr" '$4 ~ "^" a "/" {print $2}' | cut -d@ -f1)
    lan=$(ip -o -4 addr show | awk -v a="$wan_addr" '$2 != "lo" && $4 !~ "^" a "/" {print $2}' |
          cut -d@ -f1 | head -n 1)
    [ -n "$wan" ] && [ -n "$lan" ] || { echo "router: no WAN ($wan) or LAN ($lan) interface" >&2; exit 1; }
    case "$kind" in
      cone) random="" ;;                  # port-preserving: endpoint-independent mapping
      symmetric) random="--random-fully" ;; # a new random port per destination
      *) echo "router: unknown NAT kind '$kind'" >&2; exit 1 ;;
    esac
    [ "$(cat /proc/sys/net/ipv4/ip_forward)" = 1 ] || { echo "router: ip_forward is off" >&2; exit 1; }
    iptables -t nat -A POSTROUTING -o "$wan" -j MASQUERADE $random
    iptables -P FORWARD DROP
    iptables -A FORWARD -i "$lan" -o "$wan" -j ACCEPT
    iptables -A FORWARD -i "$wan" -o "$lan" -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    # unsolicited packets to the WAN address die here, before conntrack confirms
    # an entry for them (which would steal the mapping a later punch needs)
    iptables -A INPUT -i "$wan" -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    iptables -A INPUT -i "$wan" -j DROP
    echo "router: $kind NAT, wan $wan ($wan_addr), lan $lan"
    trap 'exit 0' TERM INT
    sleep infinity &
    wait
    ;;
  lan)
    gw=$1
    shift
    ip route replace default via "$gw"
    SCENARIO_ROUTED=1 exec "$0" "$@"
    ;;
  signal)
    umask 077
    printf '%s\n' "${TOKEN:?TOKEN}" >/var/lib/p2proxy/network.token
    chown p2proxy:p2proxy /var/lib/p2proxy/network.token
    drop p2proxy signal --listen "$1" --key /var/lib/p2proxy/server.key \
      --token-file /var/lib/p2proxy/network.token --admin 127.0.0.1:7071
    ;;
  coturn)
    # Relays only to the internet network. The LANs' addresses (nodes' host
    # candidates) are denied, as a real deployment denies private ranges: coturn
    # would otherwise send to them, get "network unreachable", and close the
    # whole allocation.
    addr=$1
    drop turnserver -n --listening-ip "$addr" --relay-ip "$addr" --listening-port 3478 \
      --min-port 49152 --max-port 49407 \
      --lt-cred-mech --user "${TURN_USER:?}:${TURN_PASSWORD:?}" --realm p2proxy \
      --fingerprint --no-tls --no-dtls --no-cli --no-rfc5780 --no-software-attribute \
      --allowed-peer-ip=198.19.0.0-198.19.0.255 --denied-peer-ip=198.19.1.0-198.19.2.255 \
      --userdb /var/lib/p2proxy/turndb \
      --pidfile /var/lib/p2proxy/turnserver.pid --log-file stdout --simple-log -v
    ;;
  node)
    drop p2proxy node --config "$1"
    ;;
  camera)
    drop python3 /usr/local/lib/p2proxy-scenario/rtsp_server.py 8554 --bind 0.0.0.0 --size 640x360
    ;;
  web)
    mkdir -p /srv/www
    head -c 64M /dev/urandom >/srv/www/blob.bin
    sha256sum /srv/www/blob.bin | cut -d' ' -f1 >/srv/www/blob.bin.sha256
    drop python3 -m http.server 8080 --bind 0.0.0.0 --directory /srv/www
    ;;
  *)
    echo "scenario-host: unknown role '$role'" >&2
    exit 2
    ;;
esac
