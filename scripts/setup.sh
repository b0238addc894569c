#!/usr/bin/env bash
# Installs SplitFed's build dependencies from Debian 12 packages and builds it (Release).
# Idempotent: packages already present are skipped by apt, the build is incremental.
#
#   scripts/setup.sh            install + build
#   scripts/setup.sh --no-build install only
#   SPLITFED_BUILD_DIR=dir      build somewhere other than ./build
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${SPLITFED_BUILD_DIR:-$here/build}"
do_build=1
for arg in "$@"; do
  case "$arg" in
    --no-build) do_build=0 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "setup: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# gRPC's CMake config needs all four gRPC/protobuf packages present together.
packages=(
  build-essential cmake ninja-build pkg-config ccache
  libtorch-dev
  # LibTorch's convolutions call the system BLAS (libblas.so.3). Debian's default is the
  # reference implementation; OpenBLAS (OpenMP build, sharing LibTorch's thread pool) trains
  # the U-Net 2.0-2.6x faster (docs/PERFORMANCE.md). Installing it switches the alternative.
  libopenblas0-openmp
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libssl-dev libboost-dev libsqlite3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev libtomlplusplus-dev nlohmann-json3-dev
  libpng-dev
  # Operations tests: `promtool check metrics` (prometheus), the dashboard in headless
  # chromium, and jq to read `splitfed status --json` in the shell tests.
  prometheus chromium jq
  # Fuzzing (cmake -DSPLITFED_FUZZ=ON, scripts/fuzz.sh): clang with libFuzzer and its sanitizers.
  clang libclang-rt-14-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "need root or sudo to install: ${missing[*]}"
    sudo="sudo"
  fi
  say "installing ${#missing[@]} Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  log="$(mktemp -t splitfed-apt.XXXXXX)"
  $sudo apt-get update -qq >"$log" 2>&1 \
    || { tail -20 "$log" >&2; die "apt-get update failed (is a Debian mirror reachable?)"; }
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$log" 2>&1 \
    || { tail -40 "$log" >&2; die "apt-get install failed for: ${missing[*]} (full log: $log)"; }
  say "packages installed (log: $log)"
else
  say "all ${#packages[@]} Debian packages already installed"
fi

((do_build)) || exit 0

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
say "configuring $build_dir (Release)"
cmake -S "$here" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" \
  || die "cmake configure failed (see the messages above)"
say "building with $(nproc) jobs"
cmake --build "$build_dir" -j "$(nproc)" || die "build failed (see the compiler output above)"
say "built $build_dir/splitfed"
