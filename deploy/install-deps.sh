#!/usr/bin/env bash
# Installs every package p2proxy needs to build, run and test, from Debian 12's archive.
# Usage: deploy/install-deps.sh        (as root, or as a user with sudo)
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
  SUDO="sudo"
fi

BUILD_PKGS=(
  build-essential cmake pkg-config ninja-build
  libcaf-dev libnice-dev libglib2.0-dev
  libngtcp2-dev libngtcp2-crypto-gnutls-dev libgnutls28-dev
  libprotobuf-dev protobuf-compiler
  libfmt-dev libtomlplusplus-dev libcli11-dev libcpp-httplib-dev
  libgtest-dev libgmock-dev
  libnetfilter-queue-dev
  libhiredis-dev
  clang-format clang-tidy
)
# tests/fuzz: libFuzzer and the sanitizer runtimes come with Debian's clang;
# llvm gives llvm-symbolizer for readable stack traces.
FUZZ_PKGS=(clang libclang-rt-14-dev llvm)
TEST_PKGS=(
  python3 python3-protobuf curl openssl procps iproute2 iptables nftables coturn iperf3 ethtool
  redis-server redis-tools
  python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly ffmpeg
  # tests/docker and tests/deb: Docker (started by the tests), compose v1, the base image
  docker.io docker-compose debootstrap
  faketime  # tests/lab/test_relays.py: a coturn whose clock says the credentials expired
  dnsmasq-base bind9-dnsutils
  conntrack  # tests/lab/test_paths.py, tests/bench/soak --rebind: a NAT rebinding (the router's UDP entries deleted)
  # tests/e2e/test_rtsp_udp.py: rtspsrc (plugins-good) plays UDP only,
  # h264parse (plugins-bad) and avdec_h264 (libav) decode; gst-launch-1.0
  gstreamer1.0-plugins-bad gstreamer1.0-libav gstreamer1.0-tools
)
# tests/browser: the dashboard in a real browser (chromium driven by chromedriver).
TEST_PKGS+=(chromium chromium-driver fonts-dejavu-core)

export DEBIAN_FRONTEND=noninteractive
missing=()
for p in "${BUILD_PKGS[@]}" "${FUZZ_PKGS[@]}" "${TEST_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
