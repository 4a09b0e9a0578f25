#!/usr/bin/env bash
# The Debian package, installed as a user would: builds p2proxy_<version>_amd64.deb
# from a build directory (cpack), installs it with `apt-get install ./p2proxy_*.deb`
# into a fresh container of the Debian 12 base image (deploy/docker/base-image.sh),
# then checks the installed files: `p2proxy --version`, the p2proxy user, the
# token made at install, a signaling server and a node run from them (as the
# p2proxy user, with the shipped /etc/p2proxy/node.toml pointed at that server)
# until the node is online, and `systemd-analyze verify` on the units.
#
#   tests/deb/run.sh BUILD_DIR
#
# Needs root (skips with exit 77 otherwise, fails under CI=true).
set -euo pipefail

BUILD=$(cd "${1:?usage: tests/deb/run.sh BUILD_DIR}" && pwd)
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/p2proxy-deb.XXXXXX)
T0=$SECONDS
log() { echo "[deb +$((SECONDS - T0))s] $*" >&2; }
die() { log "FAIL: $*"; exit 1; }
# shellcheck source=tests/docker/docker-env.sh
. "$REPO/tests/docker/docker-env.sh"

NAME=p2proxy-debtest-$$
IMAGE=p2proxy-debtest:$$
teardown() {
  local rc=$?
  trap - EXIT INT TERM
  if command -v docker >/dev/null && [ -S /var/run/docker.sock ]; then
    timeout 60 docker rm -f "$NAME" >/dev/null 2>&1 || true
    timeout 60 docker image rm -f "$IMAGE" >/dev/null 2>&1 || true
  fi
  docker_teardown
  rm -rf "$WORK"
  log "done in $((SECONDS - T0)) s, exit $rc"
  exit "$rc"
}
trap teardown EXIT
trap 'log "interrupted"; exit 130' INT TERM

docker_setup

# --- the package --------------------------------------------------------------------
# the package's paths (/usr/bin, /etc/p2proxy) need the prefix /usr (the default
# of a new build directory); an older build directory is switched to it
prefix=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$BUILD/CMakeCache.txt")
if [ "$prefix" != /usr ]; then
  log "configuring $BUILD with -DCMAKE_INSTALL_PREFIX=/usr (was $prefix)"
  cmake -DCMAKE_INSTALL_PREFIX=/usr "$BUILD" >/dev/null
fi
log "cpack -G DEB in $BUILD"
(cd "$BUILD" && cmake --build . --target p2proxy >/dev/null &&
  cpack -G DEB -B "$WORK/pkg" >"$WORK/cpack.log" 2>&1) || { cat "$WORK/cpack.log" >&2; die "cpack failed"; }
deb=$(ls "$WORK"/pkg/p2proxy_*_amd64.deb)
version=$(dpkg-deb -f "$deb" Version)
[ "$(basename "$deb")" = "p2proxy_${version}_amd64.deb" ] || die "unexpected file name $(basename "$deb")"
depends=$(dpkg-deb -f "$deb" Depends)
log "$(basename "$deb"): Depends: $depends"
for lib in libnice10 libngtcp2 libgnutls30 libprotobuf32 libcaf-core; do
  grep -q "$lib" <<<"$depends" || die "Depends lacks $lib (shlibdeps)"
done
dpkg-deb -c "$deb" >"$WORK/contents"
for f in ./usr/bin/p2proxy ./usr/lib/systemd/system/p2proxy-node.service \
         ./usr/lib/systemd/system/p2proxy-signal.service ./etc/p2proxy/node.toml \
         ./usr/share/doc/p2proxy/deploy.md; do
  grep -q " $f\$" "$WORK/contents" || die "the package lacks $f"
done

# --- installed into a fresh container ----------------------------------------------
# apt needs the archive (host network) for the dependencies; the checks after
# that run in a container of the installed image with no network but loopback.
log "apt-get install ./$(basename "$deb") in a fresh p2proxy-base:bookworm container"
timeout 900 docker run --name "$NAME" --network host -v "$WORK/pkg:/pkg:ro" p2proxy-base:bookworm \
  bash -c 'set -e; apt-get update -q >/dev/null
           DEBIAN_FRONTEND=noninteractive apt-get install -y -q /pkg/p2proxy_*_amd64.deb
           DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd >/dev/null
           rm -rf /var/lib/apt/lists/*' >"$WORK/install.log" 2>&1 ||
  { tail -n 30 "$WORK/install.log" >&2; die "apt-get install of the package failed"; }
grep -q "edit /etc/p2proxy/node.toml" "$WORK/install.log" || die "postinst said nothing"
docker commit "$NAME" "$IMAGE" >/dev/null
docker rm -f "$NAME" >/dev/null

cat >"$WORK/check.sh" <<'SH'
set -eu
fail() { echo "FAIL: $*" >&2; exit 1; }
p2proxy --version | grep -q "^p2proxy [0-9]" || fail "p2proxy --version: $(p2proxy --version 2>&1)"
getent passwd p2proxy >/dev/null || fail "no p2proxy user"
[ "$(stat -c '%U %a' /etc/p2proxy/network.token)" = "p2proxy 600" ] ||
  fail "network.token: $(stat -c '%U %a' /etc/p2proxy/network.token)"
# systemd-analyze verify: unit syntax, known settings, ExecStart binaries present
systemd-analyze verify /usr/lib/systemd/system/p2proxy-node.service \
  /usr/lib/systemd/system/p2proxy-signal.service 2>/tmp/verify.log ||
  { cat /tmp/verify.log >&2; fail "systemd-analyze verify"; }
if grep -v "^$" /tmp/verify.log | grep -q .; then cat /tmp/verify.log >&2; fail "systemd-analyze verify warned"; fi
# the units' own commands, as their user, in their state directories
as_p2proxy() { setpriv --reuid=p2proxy --regid=p2proxy --init-groups --no-new-privs "$@"; }
[ "$(stat -c '%U %a' /var/lib/p2proxy)" = "p2proxy 700" ] ||
  fail "/var/lib/p2proxy: $(stat -c '%U %a' /var/lib/p2proxy 2>&1)"
# what systemd's StateDirectory= would make for the signaling server
install -d -o p2proxy -g p2proxy -m 0700 /var/lib/p2proxy-signal
signal_cmd=$(sed -n '/^ExecStart=/,/[^\\]$/p' /usr/lib/systemd/system/p2proxy-signal.service |
             sed 's/^ExecStart=//; s/\\$//' | tr -s ' \n' ' ')
node_cmd=$(sed -n 's/^ExecStart=//p' /usr/lib/systemd/system/p2proxy-node.service)
# the shipped config, with the server this test runs
sed -i 's/^server = .*/server = "127.0.0.1:7000"/' /etc/p2proxy/node.toml
(cd /var/lib/p2proxy-signal && as_p2proxy $signal_cmd >/tmp/signal.log 2>&1 &)
(cd /var/lib/p2proxy && as_p2proxy $node_cmd >/tmp/node.log 2>&1 &)
for i in $(seq 60); do
  if p2proxy status --json 2>/dev/null | grep -q '"state": *"online"'; then
    [ -s /var/lib/p2proxy/node.key ] || fail "no node key in the state directory"
    [ "$(stat -c '%U %a' /var/lib/p2proxy/node.key)" = "p2proxy 600" ] || fail "node.key mode"
    [ -s /var/lib/p2proxy-signal/server.key ] || fail "no server key in its state directory"
    echo "node online: $(p2proxy status | head -n 3 | tr '\n' ' ')"
    exit 0
  fi
  sleep 0.5
done
echo "--- signal.log" >&2; tail -n 20 /tmp/signal.log >&2
echo "--- node.log" >&2; tail -n 20 /tmp/node.log >&2
fail "the node did not come online within 30 s"
SH
log "checking the installed files (no network)"
timeout 120 docker run --rm --network none -v "$WORK/check.sh:/check.sh:ro" "$IMAGE" bash /check.sh >&2 ||
  die "the installed package does not work"
log "PASS: $(basename "$deb") installs and runs"
