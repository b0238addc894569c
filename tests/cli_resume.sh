#!/usr/bin/env bash
# A coordinator killed mid-round (SIGKILL: no chance to clean up) and started again with the
# same configuration and run store takes the run up from its last completed round, while the
# two site daemons reconnect by themselves. Before the real restart, a corrupt resume file and
# a changed run-defining setting are each refused with a message that names them. Every wait
# is bounded.
set -euo pipefail
splitfed="$1"
source "$(dirname "${BASH_SOURCE[0]}")/shell_helpers.sh"
# SIGKILL at the end too: a coordinator this test stops must not get to clean up either.
shell_test_begin cli_resume 9 30 first.out first.log second.out second.log a.out a.log b.out b.log

"$splitfed" provision --out kit --sites a,b > /dev/null
config=kit/coordinator/coordinator.toml
rounds=6
status_json() {
  "$splitfed" status --config kit/admin/admin.toml --coordinator "127.0.0.1:$port" --json \
    2>/dev/null || true
}
# Reads one number of run 1 from `splitfed status --json` (empty when nobody answers).
run_field() {
  jq -r ".runs[] | select(.id == 1) | .$1" 2>/dev/null || true
}

# Two local epochs of 64 images make a round last about a second: long enough to be caught
# in the middle.
"$splitfed" coordinator --config "$config" --listen 127.0.0.1:0 --rounds "$rounds" \
  --local-epochs 2 --image-size 32 > first.out 2> first.log &
coordinator=$!
pids+=($coordinator)
wait_for_port first.out
"$splitfed" client --config kit/sites/a/site.toml --phantom 64 --seed 1 \
  --coordinator "127.0.0.1:$port" > a.out 2> a.log &
pids+=($!)
site_a=$!
"$splitfed" client --config kit/sites/b/site.toml --phantom 64 --seed 2 \
  --coordinator "127.0.0.1:$port" > b.out 2> b.log &
pids+=($!)
site_b=$!

# Kill it once a round has completed and the next one is open (mid-round).
killed_after=""
for _ in $(seq 600); do
  json="$(status_json)"
  completed="$(run_field completed_rounds <<< "$json")"
  current="$(run_field current_round <<< "$json")"
  if [[ -n "$completed" && "$completed" -ge 1 && "$current" -gt "$completed" ]] \
     && (( completed <= rounds - 3 )); then
    kill -9 "$coordinator"
    killed_after="$completed"
    break
  fi
  sleep 0.1
done
[[ -n "$killed_after" ]] || fail "no round completed within a minute"
wait "$coordinator" 2>/dev/null || true
if grep -q "done; final model" first.out; then fail "the run ended before it could be killed"; fi

# A resume file that does not match the store's checksum is refused: never a silent restart.
# (The round that completed last may be one past what status said before the kill: every
# resume file is damaged, then put back.)
resume=kit/coordinator/checkpoints/resume
ls "$resume"/round-*.state > /dev/null 2>&1 || fail "no resume state: $(ls -R kit/coordinator)"
cp -r "$resume" saved-resume
for f in "$resume"/round-*.state; do printf 'garbage' >> "$f"; done
if timeout 60 "$splitfed" coordinator --config "$config" --listen "127.0.0.1:$port" \
  --rounds "$rounds" --local-epochs 2 --image-size 32 > corrupt.out 2>&1; then
  fail "a corrupt resume state was accepted"
fi
grep -q "resume state is corrupt" corrupt.out || fail "corrupt state: $(cat corrupt.out)"
rm -r "$resume" && mv saved-resume "$resume"

# A run-defining setting that changed is refused by its name.
if timeout 60 "$splitfed" coordinator --config "$config" --listen "127.0.0.1:$port" \
  --rounds "$rounds" --local-epochs 2 --image-size 32 --lr 0.5 > changed.out 2>&1; then
  fail "a changed learning rate was accepted for the same run"
fi
grep -q "run.learning_rate is 0.5 in this configuration, but run 1" changed.out \
  || fail "changed setting: $(cat changed.out)"

# The real restart, on the same port: the sites find it again through their backoff.
"$splitfed" coordinator --config "$config" --listen "127.0.0.1:$port" --rounds "$rounds" \
  --local-epochs 2 --image-size 32 > second.out 2> second.log &
coordinator=$!
pids+=($coordinator)
for _ in $(seq 100); do grep -q "on port" second.out 2>/dev/null && break; sleep 0.1; done
resumed_after="$(sed -n 's/^coordinator: resuming run 1 after round \([0-9]*\)$/\1/p' second.out)"
[[ -n "$resumed_after" ]] && (( resumed_after >= killed_after )) \
  || fail "the restarted coordinator did not resume: $(cat second.out)"
json="$(status_json)"
[[ "$(run_field resumed <<< "$json")" == 1 ]] || fail "status does not show the resume: $json"

for pid in "$coordinator" "$site_a" "$site_b"; do
  timeout 240 tail --pid="$pid" -f /dev/null || fail "a process did not finish"
done
wait "$coordinator" || fail "the resumed coordinator failed"
grep -q "run finished after" a.out || fail "site a did not finish"
grep -q "run finished after" b.out || fail "site b did not finish"
test -f kit/coordinator/checkpoints/final.pt || fail "no final model"

# The finished run's rows, read through a coordinator on the same store (the finished run is
# not resumed: this one opens run 2 and is stopped at once).
"$splitfed" coordinator --config "$config" --listen "127.0.0.1:$port" --rounds "$rounds" \
  --local-epochs 2 --image-size 32 > third.out 2> third.log &
coordinator=$!
pids+=($coordinator)
for _ in $(seq 100); do grep -q "on port" third.out 2>/dev/null && break; sleep 0.1; done
grep -q "run 2," third.out || fail "a finished run was taken up again: $(cat third.out)"
json="$(status_json)"
kill "$coordinator"
run1="$(jq -c '.runs[] | select(.id == 1)' <<< "$json")"
[[ "$(jq -r .status <<< "$run1")" == finished ]] || fail "run 1 is not finished: $run1"
[[ "$(jq -r .resumed <<< "$run1")" == 1 ]] || fail "run 1 does not count one resume: $run1"
# Each round once, none lost, all completed; the interrupted one was started twice.
[[ "$(jq -c '[.rounds[].round]' <<< "$run1")" == "$(jq -nc "[range(1; $rounds + 1)]")" ]] \
  || fail "rounds lost or repeated: $run1"
[[ "$(jq '[.rounds[] | select(.state != "completed")] | length' <<< "$run1")" == 0 ]] \
  || fail "a round is not completed: $run1"
[[ "$(jq -c '[.rounds[] | select(.attempt == 2) | .round]' <<< "$run1")" \
   == "[$((resumed_after + 1))]" ]] || fail "only the interrupted round should have restarted: $run1"
[[ "$(jq '[.rounds[] | select(.attempt > 2)] | length' <<< "$run1")" == 0 ]] \
  || fail "a round was started more than twice: $run1"
echo "resume: killed after round $resumed_after of $rounds, resumed, every round recorded once"
