#!/usr/bin/env bash
# Makes the Debian 12 base image every p2proxy Dockerfile starts FROM, without a
# container registry: `debootstrap --variant=minbase bookworm` into a tarball, then
# `docker import`. The tarball is cached, so later runs only import it.
#
# Usage: deploy/docker/base-image.sh [IMAGE]      (root; IMAGE default p2proxy-base:bookworm)
#
# Environment:
#   P2PROXY_CACHE   where the tarball is kept (default /var/cache/p2proxy; if that cannot
#                   be created, $XDG_CACHE_HOME or ~/.cache/p2proxy)
#   DEBIAN_MIRROR   the archive debootstrap uses (default: the first URI of this host's
#                   apt sources, else http://deb.debian.org/debian)
#   DEBIAN_SECURITY_MIRROR   the security archive (default: this host's, else
#                   http://deb.debian.org/debian-security)
# The image's apt uses bookworm, bookworm-updates and bookworm-security, so the
# images built FROM it get security fixes. Delete the tarball to bootstrap anew.
#
# Where a registry is reachable, `docker pull debian:12` and
# `docker tag debian:12 p2proxy-base:bookworm` do the same job (docs/deploy.md).
set -euo pipefail

IMAGE=${1:-p2proxy-base:bookworm}
log() { echo "base-image: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and docker need it)"
command -v docker >/dev/null || die "docker not installed (apt-get install docker.io)"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE present"
  exit 0
fi

cache=${P2PROXY_CACHE:-/var/cache/p2proxy}
if ! mkdir -p "$cache" 2>/dev/null; then
  cache=${XDG_CACHE_HOME:-$HOME/.cache}/p2proxy
  mkdir -p "$cache"
fi
# the name changes when what goes into the tarball does
tarball=$cache/debian-bookworm-minbase-v2.tar

if [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || die "debootstrap not installed (apt-get install debootstrap)"
  uris=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list.d/*.sources \
           /etc/apt/sources.list 2>/dev/null | awk '{print $2}' || true)
  mirror=${DEBIAN_MIRROR:-$(grep -v security <<<"$uris" | head -n 1)}
  mirror=${mirror:-http://deb.debian.org/debian}
  security=${DEBIAN_SECURITY_MIRROR:-$(grep security <<<"$uris" | head -n 1)}
  security=${security:-http://deb.debian.org/debian-security}
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$root" "$tarball.part"' EXIT
  log "debootstrap --variant=minbase bookworm from $mirror (a few minutes, once)"
  timeout 1200 debootstrap --variant=minbase bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
    die "debootstrap failed (see $cache/debootstrap.log)"
  # a smaller image: no apt lists, caches or docs from the bootstrap
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
         "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
  # apt inside the image uses the same archive, and keeps no docs from later installs
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
    "$mirror" "$mirror" "$security" >"$root/etc/apt/sources.list"
  printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' \
    >"$root/etc/dpkg/dpkg.cfg.d/01-nodoc"
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$root/etc/apt/apt.conf.d/01-norecommends"
  tar -C "$root" --numeric-owner -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
  rm -rf "$root"
  trap - EXIT
  log "cached $tarball ($(du -h "$tarball" | cut -f1))"
fi

log "docker import $tarball as $IMAGE"
docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' "$tarball" "$IMAGE" >/dev/null
log "$IMAGE ready"
