#!/usr/bin/env bash
# Fuzzes each decoder with libFuzzer (clang, ASan + UBSan) for a number of inputs, and reports
# inputs, seconds, and any crash, leak or hang. The committed corpus (fuzz/corpus/NAME) plus
# fresh seeds is the starting point; with --merge, new coverage is minimised back into it.
#
#   scripts/fuzz.sh [--runs N] [--merge] [TARGET...]   (default: 1000000 runs, every target)
#   SPLITFED_FUZZ_DIR=dir                               build somewhere other than ./build-fuzz
#
# Results: one line per target on stdout and in build-fuzz/fuzz-report.tsv; crashing inputs are
# kept as build-fuzz/findings/NAME/crash-* (reproduce: build-fuzz/fuzz/fuzz_NAME FILE).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${SPLITFED_FUZZ_DIR:-$here/build-fuzz}"
all=(tensor_codec split_stream state_codec update_stream control_requests experiment_toml png)
runs=1000000
merge=0
targets=()
while (($#)); do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --merge) merge=1; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    -*) echo "fuzz: unknown option '$1' (try --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
((${#targets[@]})) || targets=("${all[@]}")
say() { printf '[fuzz] %s\n' "$*" >&2; }
command -v clang++ >/dev/null || { echo "fuzz: clang++ is missing (scripts/setup.sh installs it)" >&2; exit 1; }

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
mkdir -p "$build_dir"
say "configuring $build_dir (clang, libFuzzer, ASan + UBSan)"
cmake -S "$here" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++ -DSPLITFED_FUZZ=ON "${launcher[@]}" > "$build_dir/configure.log" 2>&1 \
  || { cat "$build_dir/configure.log"; exit 1; }
cmake --build "$build_dir" -j "$(nproc)" --target fuzz_targets

seeds="$build_dir/seeds"
rm -rf "$seeds"
"$build_dir/fuzz/fuzz_write_seeds" "$seeds" "$here/examples" >&2
# Torch's intra-op pool would only add threads to every tiny decode.
export OMP_NUM_THREADS=1
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
report="$build_dir/fuzz-report.tsv"
printf 'target\tinputs\tseconds\tcorpus\tresult\n' > "$report"
failed=0
for t in "${targets[@]}"; do
  committed="$here/fuzz/corpus/$t"
  work="$build_dir/corpus/$t"
  findings="$build_dir/findings/$t"
  mkdir -p "$committed" "$work" "$findings"
  cp -n "$committed"/* "$work"/ 2>/dev/null || true
  cp -n "$seeds/$t"/* "$work"/ 2>/dev/null || true
  log="$build_dir/fuzz-$t.log"
  say "$t: $runs inputs"
  start=$(date +%s)
  result=ok
  # -timeout: one input taking 10 s is a hang; -rss_limit_mb: a decoder must not need 2.5 GiB.
  "$build_dir/fuzz/fuzz_$t" -runs="$runs" -max_len=8192 -timeout=10 -rss_limit_mb=2560 \
    -print_final_stats=1 -artifact_prefix="$findings/" "$work" > "$log" 2>&1 || result=FAILED
  seconds=$(( $(date +%s) - start ))
  done_runs="$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)"
  [[ "$result" == ok && "$done_runs" == "$runs" ]] || result=FAILED
  [[ "$result" == ok ]] || { failed=1; tail -40 "$log" >&2; }
  if ((merge)); then
    "$build_dir/fuzz/fuzz_$t" -merge=1 -max_len=8192 "$committed" "$work" >> "$log" 2>&1
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$t" "${done_runs:-0}" "$seconds" "$(ls "$work" | wc -l)" "$result" \
    | tee -a "$report"
done
exit "$failed"
