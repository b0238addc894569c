#!/usr/bin/env bash
# Builds the tests with AddressSanitizer and UndefinedBehaviorSanitizer (any report aborts the
# test) in build-asan/, and runs the torch-free unit tests, the federation tests, the fuzz
# corpus replays and the 64-site load check under them. CI runs this after scripts/test.sh.
#
#   scripts/sanitize.sh            build + run
#   SPLITFED_ASAN_DIR=dir          build somewhere other than ./build-asan
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${SPLITFED_ASAN_DIR:-$here/build-asan}"
say() { printf '[sanitize] %s\n' "$*"; }

# The torch-free unit tests, the federation tests (real mTLS servers on loopback), every fuzz
# target's corpus replay and the 64-site load check.
tests=(metrics_test monitor_test status_test config_test provision_test store_test
       sim_noise_test method_codec_test proto_test federation_test)
fuzz=(tensor_codec split_stream state_codec update_stream control_requests experiment_toml png)
targets=("${tests[@]}" bench_load_many_sites)
for f in "${fuzz[@]}"; do targets+=("fuzz_$f"); done

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
say "configuring $build_dir (ASan + UBSan)"
mkdir -p "$build_dir"
cmake -S "$here" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSPLITFED_SANITIZE=ON "${launcher[@]}" > "$build_dir/configure.log" 2>&1 \
  || { cat "$build_dir/configure.log"; exit 1; }
say "building ${#targets[@]} targets with $(nproc) jobs"
cmake --build "$build_dir" -j "$(nproc)" --target "${targets[@]}"

# halt_on_error: the first report fails the test. LibTorch and gRPC are not instrumented;
# ASan still sees every allocation they make through malloc.
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:abort_on_error=1:strict_string_checks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
regex="^($(IFS='|'; echo "${tests[*]}")|fuzz_replay_.*|load_64_sites_over_mtls_lose_nothing)\$"
say "running the tests under the sanitizers"
ctest --test-dir "$build_dir" --output-on-failure --timeout 900 -R "$regex"
