# Shared by tests/docker/run.sh and tests/deb/run.sh (sourced): root check,
# packages, one Docker user at a time, a dockerd of our own when none runs,
# and the base image.
#
# Needs: REPO, WORK (a scratch directory), log(), die().
# Gives: docker_setup (call once), docker_teardown (call from the EXIT trap).

# Debian's docker client first: it matches Debian's dockerd.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
DOCKERD_PID=""

docker_setup() {
  if [ "$(id -u)" -ne 0 ]; then
    if [ "${CI:-}" = true ]; then die "needs root (CI=true)"; fi
    log "SKIP: needs root (Docker)"
    exit 77
  fi
  local need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v docker-compose >/dev/null || need+=(docker-compose)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  if [ "${#need[@]}" -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
  fi
  # One Docker user at a time: the scenarios share subnets and the daemon.
  exec 9>/run/lock/p2proxy-docker.lock
  flock -w 3600 9 || die "another Docker test holds /run/lock/p2proxy-docker.lock"
  if ! timeout 10 docker info >/dev/null 2>&1; then
    # Our own daemon: no default bridge, no iptables rules, host forwarding
    # left as it is. Stopped by its pid when we are done.
    log "starting dockerd"
    # its own session: a Ctrl-C meant for the test must not stop the daemon
    # before the test has torn its containers down
    setsid dockerd --bridge=none --iptables=false --ip6tables=false --ip-forward=false \
      --ip-masq=false >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    local i
    for ((i = 0; i < 60; i++)); do
      timeout 5 docker info >/dev/null 2>&1 && break
      kill -0 "$DOCKERD_PID" 2>/dev/null || die "dockerd exited: $(tail -n 5 "$WORK/dockerd.log")"
      sleep 1
    done
    timeout 5 docker info >/dev/null 2>&1 || die "dockerd did not come up in 60 s"
  fi
  "$REPO/deploy/docker/base-image.sh" || die "no base image"
}

docker_teardown() {
  if [ -n "$DOCKERD_PID" ]; then
    log "stopping dockerd (pid $DOCKERD_PID)"
    kill -TERM "$DOCKERD_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 30; i++)); do
      kill -0 "$DOCKERD_PID" 2>/dev/null || break
      sleep 1
    done
    kill -KILL "$DOCKERD_PID" 2>/dev/null || true
    wait "$DOCKERD_PID" 2>/dev/null || true
    DOCKERD_PID=""
  fi
}
