#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (ctest). Exits non-zero on any
# failure. Tests that use the real BU-BIL data look for it in ../shared/data beside the checkout
# (or $SPLITFED_SHARED_DATA).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${SPLITFED_BUILD_DIR:-$here/build}"
"$here/scripts/setup.sh"
echo "[test] running the test suite in $build_dir"
ctest --test-dir "$build_dir" --output-on-failure --timeout 900 "$@"
