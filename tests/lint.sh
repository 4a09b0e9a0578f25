#!/usr/bin/env bash
# Format and lint checks, run by tests/run-all.sh before the builds so that
# drift fails fast. Usage: tests/lint.sh [BUILD_DIR]   (default: build)
# - clang-format --dry-run --Werror over every tracked C++ file (.clang-format);
# - clang-tidy with the repo's .clang-tidy over the product sources (actors/,
#   node/); any finding fails (WarningsAsErrors). It needs the build's
#   compile_commands.json and generated protobuf headers, so the build dir is
#   configured and only the proto library is built here.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}

mapfile -t all < <(git ls-files '*.cpp' '*.hpp' '*.h')
if ! clang-format --dry-run --Werror "${all[@]}"; then
  echo "lint: clang-format drift in the files above; fix with:" >&2
  echo "  git ls-files '*.cpp' '*.hpp' '*.h' | xargs clang-format -i" >&2
  exit 1
fi
echo "lint: clang-format clean (${#all[@]} files)"

cmake -S . -B "$dir" -G Ninja >/dev/null
cmake --build "$dir" --target p2proxy_proto -j "$(nproc)" >/dev/null
mapfile -t product < <(git ls-files 'actors/*.cpp' 'node/*.cpp')
log=$(mktemp)
set +e
printf '%s\n' "${product[@]}" \
  | xargs -P "$(nproc)" -n 4 clang-tidy -p "$dir" --quiet >"$log" 2>&1
rc=$?
set -e
if [ "$rc" -ne 0 ] || grep -q "warning:\|error:" "$log"; then
  grep -A3 "warning:\|error:" "$log" >&2 || cat "$log" >&2
  rm -f "$log"
  echo "lint: clang-tidy findings above (config: .clang-tidy)" >&2
  exit 1
fi
rm -f "$log"
echo "lint: clang-tidy clean (${#product[@]} product sources)"
