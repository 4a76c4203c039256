#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for FUZZ_SECONDS seconds
# (default 60) over a scratch copy of its seed corpus, so new inputs do not land in the repository.
# Exits non-zero if any target crashes; the crashing input is kept under $BUILD_DIR/fuzz-artifacts.
#
#   scripts/fuzz.sh                 # every tests/fuzz/fuzz_*.cpp target
#   FUZZ_SECONDS=120 scripts/fuzz.sh fuzz_gguf
#
# Environment: FUZZ_SECONDS, FUZZ_BUILD_DIR (default build-fuzz), FUZZ_JOBS (ninja -j, default 2),
# FUZZ_MAX_LEN (largest input in bytes, default 4096).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${FUZZ_SECONDS:-60}"
build="${FUZZ_BUILD_DIR:-$root/build-fuzz}"
jobs="${FUZZ_JOBS:-2}"
max_len="${FUZZ_MAX_LEN:-4096}"

if ! command -v clang++ >/dev/null; then
  echo "fuzz.sh: clang++ not found (Debian: apt-get install clang)" >&2
  exit 2
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for src in "$root"/tests/fuzz/fuzz_*.cpp; do
    targets+=("$(basename "$src" .cpp)")
  done
fi

CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMAAS_FUZZ=ON -DMAAS_TESTS=ON >/dev/null
ninja -C "$build" -j "$jobs" "${targets[@]}"

artifacts="$build/fuzz-artifacts"
mkdir -p "$artifacts"
failed=()
for target in "${targets[@]}"; do
  work="$(mktemp -d "${TMPDIR:-/tmp}/$target.XXXXXX")"
  seeds="$root/tests/fuzz/corpus/$target"
  if [ -d "$seeds" ]; then cp -r "$seeds/." "$work/"; fi
  echo "== $target: ${seconds}s over $(find "$work" -type f | wc -l) seed inputs"
  if "$build/bin/$target" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/$target-" \
      "$work" >"$build/$target.log" 2>&1; then
    grep -E "stat::number_of_executed_units|Done [0-9]+ runs" "$build/$target.log" | tail -2 || true
    rm -rf "$work"
  else
    echo "!! $target failed; log: $build/$target.log; corpus kept in $work" >&2
    grep -E "ERROR|SUMMARY|invariant|Test unit written" "$build/$target.log" | head -20 >&2 || true
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz.sh: crashes in: ${failed[*]} (inputs under $artifacts)" >&2
  exit 1
fi
echo "fuzz.sh: no crashes in ${targets[*]}"
