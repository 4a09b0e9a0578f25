#!/usr/bin/env bash
# An integration scenario in Docker (deploy/docker/scenarios): two homes behind
# NAT routers, the signaling server and coturn on a small internet.
#
#   tests/docker/run.sh cone|symmetric
#
# Builds the images (deploy/docker), brings the scenario up, then checks what a
# user would: the viewer plays cam1 through the tunnel (ffprobe sees H.264
# 640x360), a 64 MiB download through it has the web server's SHA-256, the
# session's path class in `p2proxy status --json` is the expected one (cone:
# direct, symmetric: relay), and when the camera site's node dies, a client in
# the middle of a download gets a reset and the viewer's status shows the
# session gone. Everything is torn down at the end, also on failure or Ctrl-C.
# Needs root (skips with exit 77 otherwise, fails under CI=true).
# P2PROXY_KEEP_IMAGES=0 removes the scenario's images afterwards (default: keep,
# so the next run reuses their layers).
set -euo pipefail

SCENARIO=${1:-}
case "$SCENARIO" in
  cone) EXPECT=direct ;;
  symmetric) EXPECT=relay ;;
  *) echo "usage: tests/docker/run.sh cone|symmetric" >&2; exit 2 ;;
esac
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SCN=$REPO/deploy/docker/scenarios
PROJECT=p2proxy-$SCENARIO
WORK=$(mktemp -d /tmp/p2proxy-docker.XXXXXX)
T0=$SECONDS
log() { echo "[docker $SCENARIO +$((SECONDS - T0))s] $*" >&2; }
die() { log "FAIL: $*"; exit 1; }
# shellcheck source=tests/docker/docker-env.sh
. "$REPO/tests/docker/docker-env.sh"

COMPOSE=(docker-compose -p "$PROJECT" -f "$SCN/docker-compose.yml" -f "$SCN/$SCENARIO.yml")
compose() { timeout "$1" "${COMPOSE[@]}" "${@:2}"; } # SECONDS ARGS...

UP=0
teardown() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$UP" = 1 ]; then
    if [ "$rc" -ne 0 ]; then
      log "logs of every host (last 40 lines each):"
      compose 60 logs --no-color --tail 40 >&2 2>&1 || true
    fi
    log "tearing down"
    compose 120 down --volumes --remove-orphans --timeout 2 >/dev/null 2>&1 ||
      log "compose down failed"
  fi
  docker_teardown
  rm -rf "$WORK"
  log "done in $((SECONDS - T0)) s, exit $rc"
  exit "$rc"
}
trap teardown EXIT
trap 'log "interrupted"; exit 130' INT TERM

docker_setup

log "building images (deploy/docker/Dockerfile, then the scenario image)"
# The build stage gets a tag too: its package layer stays referenced, so the
# prune below drops only what a new source tree replaced, not the cache.
docker build -q --network host --target build -f "$REPO/deploy/docker/Dockerfile" \
  -t p2proxy-build:local "$REPO" >"$WORK/build.log" 2>&1 ||
  { tail -n 40 "$WORK/build.log" >&2; die "p2proxy build stage failed"; }
docker build -q --network host -f "$REPO/deploy/docker/Dockerfile" -t p2proxy:local "$REPO" \
  >"$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log" >&2; die "p2proxy image build failed"; }
docker build -q --network host -f "$SCN/Dockerfile" -t p2proxy-scenario:local "$REPO" \
  >"$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log" >&2; die "scenario image build failed"; }
docker image prune -f >/dev/null 2>&1 || true
log "images built"

# a scenario left behind by a killed run goes first (either one: they share subnets)
for s in cone symmetric; do
  timeout 120 docker-compose -p "p2proxy-$s" -f "$SCN/docker-compose.yml" -f "$SCN/$s.yml" \
    down --volumes --remove-orphans --timeout 1 >/dev/null 2>&1 || true
done
UP=1
compose 300 up -d >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; die "compose up failed"; }
log "scenario up"

# --- helpers ------------------------------------------------------------------
status() { # HOST: its node's `p2proxy status --json`
  timeout 15 docker exec "${PROJECT}_$1_1" p2proxy status --admin 127.0.0.1:7070 --json
}
field() { # PYTHON-EXPRESSION over the JSON document `s` on stdin; prints the value
  python3 -c 'import json,sys; s=json.load(sys.stdin); v='"$1"'; print(v if v is not None else "")'
}
wait_for() { # SECONDS WHAT COMMAND...: until COMMAND succeeds
  local limit=$1 what=$2
  shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || die "timed out after ${limit}s waiting for $what"
    sleep 1
  done
}
online() { [ "$(status "$1" | field 's["signal"]["state"]')" = online ]; }
web_ready() { docker exec "${PROJECT}_web_1" test -s /srv/www/blob.bin.sha256; }
camera_ready() { docker exec "${PROJECT}_camera_1" bash -c 'exec 3<>/dev/tcp/127.0.0.1/8554'; }
session_row() { # the viewer's session row for node-a, as JSON ("" if none)
  status viewer | python3 -c '
import json, sys
s = json.load(sys.stdin)
for r in (s.get("sessions") or {}).get("sessions") or []:
    if r.get("peer") == sys.argv[1]:
        print(json.dumps(r))' "$NODE_A"
}

wait_for 60 "node-a online" online node-a
wait_for 60 "the viewer online" online viewer
wait_for 30 "the web server's file" web_ready
wait_for 30 "the camera" camera_ready
NODE_A=$(status node-a | field 's["nodeId"]')
[ -n "$NODE_A" ] || die "node-a's status has no node id"
log "both nodes online (node-a $NODE_A)"

# --- 1. the camera through the tunnel -------------------------------------------
t=$SECONDS
probe=$(timeout 90 docker exec "${PROJECT}_viewer_1" ffprobe -v error -rtsp_transport tcp \
  -select_streams v:0 -show_entries stream=codec_name,width,height -of json \
  rtsp://127.0.0.1:8554/cam1/stream 2>"$WORK/ffprobe.err") ||
  die "ffprobe through the tunnel failed: $(tail -n 5 "$WORK/ffprobe.err")"
video=$(field '"%s %sx%s" % (s["streams"][0]["codec_name"], s["streams"][0]["width"], s["streams"][0]["height"])' <<<"$probe")
[ "$video" = "h264 640x360" ] || die "ffprobe saw '$video', expected 'h264 640x360'"
log "cam1 plays through the tunnel: $video ($((SECONDS - t)) s)"

# --- 2. 64 MiB over HTTP, checked by SHA-256 ------------------------------------
t=$SECONDS
want=$(docker exec "${PROJECT}_web_1" cat /srv/www/blob.bin.sha256)
got=$(timeout 180 docker exec "${PROJECT}_viewer_1" sh -c \
  'curl -fsS --max-time 170 http://127.0.0.1:8080/r/files/blob.bin | sha256sum | cut -d" " -f1') ||
  die "the download through the tunnel failed"
[ -n "$want" ] && [ "$got" = "$want" ] || die "SHA-256 through the tunnel $got, the web server's $want"
log "64 MiB through the tunnel, SHA-256 matches ($((SECONDS - t)) s)"

# --- 3. the path class ------------------------------------------------------------
row=$(session_row)
[ -n "$row" ] || die "the viewer has no session with node-a"
pair=$(field '"%s-%s" % (s.get("localCandidateType"), s.get("remoteCandidateType"))' <<<"$row")
case "$pair" in
  *relay*) class=relay ;;
  *host* | *srflx* | *prflx*) class=direct ;;
  *) class="unknown ($pair)" ;;
esac
[ "$class" = "$EXPECT" ] || die "path class $class ($pair), expected $EXPECT"
log "path class $class ($pair), as expected"

# --- 4. the camera site's node dies ------------------------------------------------
# A client downloads slowly through the viewer's http listener; once bytes flow,
# node-a's container is killed. The client must see a reset (not a clean end).
cat >"$WORK/client.py" <<'PY'
import json, socket, sys, time
s = socket.create_connection(("127.0.0.1", 8080), timeout=60)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
s.sendall(b"GET /r/files/blob.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
got, said, result, end = 0, False, "timeout", time.monotonic() + 90
while time.monotonic() < end:
    try:
        b = s.recv(65536)
    except ConnectionResetError:
        result = "reset"
        break
    except socket.timeout:
        result = "stalled"
        break
    if not b:
        result = "complete" if got >= 64 << 20 else "eof"
        break
    got += len(b)
    if not said and got >= 1 << 20:
        print("reading", flush=True)
        said = True
    time.sleep(0.02)
print(json.dumps({"result": result, "bytes": got}), flush=True)
PY
timeout 150 docker exec -i "${PROJECT}_viewer_1" python3 - <"$WORK/client.py" >"$WORK/client.out" 2>&1 &
client=$!
wait_for 30 "the slow client to receive 1 MiB" grep -q reading "$WORK/client.out"
t=$SECONDS
docker kill "${PROJECT}_node-a_1" >/dev/null
log "killed node-a's container"
wait "$client" || true
res=$(tail -n 1 "$WORK/client.out")
result=$(field 's["result"]' <<<"$res" 2>/dev/null) || die "the client printed: $(cat "$WORK/client.out")"
[ "$result" = reset ] || die "the client saw '$result' ($res), expected a reset"
log "the client got a reset after $((SECONDS - t)) s ($res)"
gone() { # no session row for node-a, and node-a among the recently closed ones
  local r
  r=$(session_row) || return 1
  [ -z "$r" ] || return 1
  status viewer | python3 -c '
import json, sys
s = json.load(sys.stdin)
closed = (s.get("sessions") or {}).get("recentlyClosed") or []
sys.exit(0 if any(r.get("peer") == sys.argv[1] for r in closed) else 1)' "$NODE_A"
}
wait_for 30 "the viewer's session with node-a to go" gone
log "the viewer's status shows the session gone ($((SECONDS - t)) s after the kill)"

log "PASS: $SCENARIO ($EXPECT) in $((SECONDS - T0)) s"
