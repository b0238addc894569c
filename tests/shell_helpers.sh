# Sourced by the CLI shell tests: a scratch folder that is removed at exit, the background
# processes a test records in `pids` killed at exit, and, when the test fails, the last lines
# of each log it names. Every wait is bounded.
#
#   shell_test_begin NAME SIGNAL LINES LOG...   (then: "$cmd" ... & pids+=($!))

shell_test_begin() {
  shell_test_name="$1"
  shell_test_signal="$2"
  shell_test_lines="$3"
  shift 3
  shell_test_logs=("$@")
  work="$(mktemp -d)"
  pids=()
  trap shell_test_end EXIT
  cd "$work"
}

shell_test_end() {
  local status=$?
  for pid in "${pids[@]}"; do kill "-$shell_test_signal" "$pid" 2>/dev/null || true; done
  if [[ $status -ne 0 ]]; then  # whatever failed, show what each process said
    for log in "${shell_test_logs[@]}"; do
      [[ -f "$work/$log" ]] \
        && { echo "--- $log (last $shell_test_lines lines)"; tail -n "$shell_test_lines" "$work/$log"; }
    done
  fi
  rm -rf "$work"
}

fail() { echo "$shell_test_name: $*" >&2; exit 1; }

# Sets `port` from a coordinator's stdout ($1) once it says "on port N"; fails after 15 s.
# The background job may not have opened the file yet: a missing file reads as "not yet".
wait_for_port() {
  port=""
  for _ in $(seq 150); do
    port="$(sed -n 's/.*on port \([0-9]*\).*/\1/p' "$1" 2>/dev/null || true)"
    [[ -n "$port" ]] && return 0
    sleep 0.1
  done
  fail "the coordinator did not start ($1)"
}
