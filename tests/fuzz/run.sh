#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, -fsanitize=fuzzer,address,undefined,
# in build-fuzz/) and runs each for SECONDS, printing per harness the inputs
# it executed and what it found. Exits non-zero on any crash, leak, UBSan
# report, timeout or out-of-memory.
#
#   tests/fuzz/run.sh SECONDS [HARNESS...]    (default: every harness)
#
# Environment: P2PROXY_FUZZ_BUILD (build directory, default build-fuzz),
# P2PROXY_FUZZ_JOBS (harnesses run at once, default 1).
# Seeds come from tests/fuzz/corpus/<harness>/ and are never written to;
# what a run discovers goes to BUILD/fuzz-corpus/<harness>/ (kept between
# runs), a finding to BUILD/fuzz-findings/<harness>/: copy it into the seed
# corpus once fixed, so every later run replays it. docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() { echo "usage: tests/fuzz/run.sh SECONDS [HARNESS...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
secs=$1; shift
[[ "$secs" =~ ^[0-9]+$ ]] || usage
all=(frame preamble signal http rtsp socks5 adapter config admin)
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=("${all[@]}")
build=${P2PROXY_FUZZ_BUILD:-build-fuzz}
jobs=${P2PROXY_FUZZ_JOBS:-1}

# -O1 without NDEBUG: the product's asserts stay on.
cmake -S . -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DP2PROXY_TESTS=OFF -DP2PROXY_FUZZ=ON >/dev/null
targets=()
for h in "${harnesses[@]}"; do targets+=("fuzz_$h"); done
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"

max_len() {
  case $1 in
    frame | signal) echo 8192 ;;
    config) echo 16384 ;;
    *) echo 20000 ;; # past the 16 KiB head and preamble limits
  esac
}

export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:suppressions=$PWD/tests/sanitizer.supp

run_one() { # harness → BUILD/fuzz-logs/<harness>.log, exit status
  local h=$1 work=$build/fuzz-corpus/$1 found=$build/fuzz-findings/$1
  mkdir -p "$work" "$found" "$build/fuzz-logs"
  "$build/tests/fuzz/fuzz_$h" -max_total_time="$secs" -timeout=10 \
    -rss_limit_mb=2048 -max_len="$(max_len "$h")" -print_final_stats=1 \
    -artifact_prefix="$found/" "$work" "tests/fuzz/corpus/$h" \
    >"$build/fuzz-logs/$h.log" 2>&1
}

report() { # harness, exit status → one line; 1 if it found something
  local h=$1 rc=$2 log=$build/fuzz-logs/$1.log
  local execs cov findings
  execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -n 1)
  cov=$(sed -nE 's/^#[0-9]+.*(DONE|INITED).* cov: ([0-9]+).*/\2/p' "$log" | tail -n 1)
  findings=$(find "$build/fuzz-findings/$h" -type f -newer "$log.start" | wc -l)
  if [ "$rc" -ne 0 ] && [ "$findings" -eq 0 ]; then findings=1; fi
  printf 'fuzz %-9s %12s executions, %s findings (exit %s; %s edges)\n' \
    "$h" "${execs:-?}" "$findings" "$rc" "${cov:-?}"
  if [ "$findings" -ne 0 ]; then
    grep -E "ERROR: |runtime error|fuzz invariant|Test unit written" "$log" | head -n 20 || true
    echo "  (log: $log)"
    return 1
  fi
  return 0
}

failed=0
i=0
while [ $i -lt ${#harnesses[@]} ]; do
  batch=("${harnesses[@]:$i:$jobs}")
  pids=()
  for h in "${batch[@]}"; do
    mkdir -p "$build/fuzz-logs"
    touch "$build/fuzz-logs/$h.log.start"
    run_one "$h" &
    pids+=($!)
  done
  for k in "${!batch[@]}"; do
    rc=0
    wait "${pids[$k]}" || rc=$?
    report "${batch[$k]}" "$rc" || failed=$((failed + 1))
  done
  i=$((i + jobs))
done
echo "fuzz: ${#harnesses[@]} harnesses, $failed with findings"
[ "$failed" -eq 0 ]
