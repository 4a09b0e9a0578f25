#!/usr/bin/env bash
# The README's test command: installs what the tests need, checks the
# format and lint (tests/lint.sh), builds p2proxy
# twice (release with debug info, and ASan+UBSan for the unit and actor
# tests), and runs every test. Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh

# Format drift and clang-tidy findings fail before anything is built.
tests/lint.sh build

jobs=$(nproc)
build() { # dir, extra cmake args...
  local dir=$1; shift
  cmake -S . -B "$dir" -G Ninja "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
}

build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
build build-asan -DCMAKE_BUILD_TYPE=Debug -DP2PROXY_SANITIZE=ON

passed=0 failed=0
run_ctest() { # dir, label
  local dir=$1 label=$2 log
  log=$(mktemp)
  set +e
  (cd "$dir" && ctest --output-on-failure --timeout 900 -j "$jobs") | tee "$log"
  local rc=${PIPESTATUS[0]}
  set -e
  local line
  line=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$log" | tail -n 1 || true)
  if [ -n "$line" ]; then
    local nfail total
    nfail=$(sed -E 's/.*tests passed, ([0-9]+) tests failed out of ([0-9]+).*/\1/' <<<"$line")
    total=$(sed -E 's/.*tests passed, ([0-9]+) tests failed out of ([0-9]+).*/\2/' <<<"$line")
    passed=$((passed + total - nfail))
    failed=$((failed + nfail))
  elif [ "$rc" -ne 0 ]; then
    failed=$((failed + 1))
  fi
  rm -f "$log"
  echo "== $label: ctest exit $rc"
  return 0
}

# (This includes the Docker scenarios and the .deb test, labels docker and deb:
# tests/docker, tests/deb. They run alone and start their own dockerd.)
run_ctest build "tests (release)"
# Sanitizers: a leak or undefined behaviour fails the test that caused it.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 run_ctest build-asan "unit and actor tests (ASan+UBSan)"

# --- fuzzing (tests/fuzz, docs/fuzzing.md) -----------------------------------
# Every libFuzzer harness for a bounded time (clang build in build-fuzz; with
# the build, under 8 minutes on 2 cores). A crash, leak or UBSan report is a
# failure. P2PROXY_FUZZ_SECONDS changes the time per harness (0 skips).
fuzz_seconds=${P2PROXY_FUZZ_SECONDS:-30}
if [ "$fuzz_seconds" -gt 0 ]; then
  if P2PROXY_FUZZ_JOBS=${P2PROXY_FUZZ_JOBS:-$jobs} tests/fuzz/run.sh "$fuzz_seconds"; then
    passed=$((passed + 1))
    echo "== fuzzing: passed"
  else
    failed=$((failed + 1))
    echo "== fuzzing: FAILED (findings in build-fuzz/fuzz-findings/)"
  fi
fi
# --- end of fuzzing ------------------------------------------------------------

echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
