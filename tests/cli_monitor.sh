#!/usr/bin/env bash
# The coordinator's monitor port during a real run (two sites over mutual TLS): /metrics is
# valid Prometheus text (`promtool check metrics`) with the values the run must have; the
# dashboard refuses a visitor without the token, and in headless Chromium shows both sites and
# the current round. The screenshot stays in the test's folder: monitor-dashboard.png.
set -euo pipefail
splitfed="$1"
out_dir="$(pwd)"
source "$(dirname "${BASH_SOURCE[0]}")/shell_helpers.sh"
shell_test_begin cli_monitor TERM 40 coordinator.out coordinator.log a.log b.log metrics.txt \
  promtool.out dom.html

"$splitfed" provision --out kit --sites a,b > /dev/null
rounds=5
"$splitfed" coordinator --config kit/coordinator/coordinator.toml --listen 127.0.0.1:0 \
  --monitor 127.0.0.1:0 --rounds "$rounds" --local-epochs 3 --image-size 32 \
  > coordinator.out 2> coordinator.log &
pids+=($!)
wait_for_port coordinator.out
monitor="$(sed -n 's|.*metrics at http://127.0.0.1:\([0-9]*\)/metrics.*|\1|p' coordinator.out)"
token="$(sed -n 's|.*dashboard at http://127.0.0.1:[0-9]*/?token=\([0-9a-f]*\)$|\1|p' coordinator.out)"
[[ -n "$port" && -n "$monitor" && -n "$token" ]] || fail "no ports or token: $(cat coordinator.out)"
base="http://127.0.0.1:$monitor"

seed=0
for site in a b; do
  seed=$((seed + 1))
  "$splitfed" client --config "kit/sites/$site/site.toml" --phantom 64 --seed "$seed" \
    --coordinator "127.0.0.1:$port" > "$site.out" 2> "$site.log" &
  pids+=($!)
done

metric() {  # the value of one sample (exact name and labels) on metrics.txt
  awk -v key="$1" '$1 == key { print $2 }' metrics.txt
}
# Wait until one round is completed and the next one is training.
for _ in $(seq 600); do
  curl -sf "$base/metrics" > metrics.txt || true
  if [[ "$(metric 'splitfed_run_state{state="training"}')" == 1 ]] \
     && (( $(metric splitfed_rounds_completed_total || echo 0) >= 1 )); then
    break
  fi
  sleep 0.1
done
[[ "$(metric 'splitfed_run_state{state="training"}')" == 1 ]] || fail "never saw a round training"
promtool check metrics < metrics.txt > promtool.out 2>&1 || fail "promtool: $(cat promtool.out)"

# Values the run must have.
[[ "$(metric splitfed_sites_enrolled)" == 2 ]] || fail "enrolled"
[[ "$(metric splitfed_sites_joined)" == 2 ]] || fail "joined"
[[ "$(metric splitfed_sites_connected)" == 2 ]] || fail "connected"
[[ "$(metric splitfed_rounds_planned)" == "$rounds" ]] || fail "planned"
completed="$(metric splitfed_rounds_completed_total)"
current="$(metric splitfed_current_round)"
(( current == completed + 1 )) || fail "current round $current after $completed completed"
[[ "$(metric splitfed_round_duration_seconds_count)" == "$completed" ]] || fail "durations"
awk '$1 == "splitfed_round_duration_seconds_sum" && $2 > 0 { ok = 1 } END { exit !ok }' \
  metrics.txt || fail "round durations are not positive"
for site in a b; do
  awk -v k="splitfed_site_received_bytes_total{site=\"$site\"}" '$1 == k && $2 > 100000 { ok = 1 }
    END { exit !ok }' metrics.txt || fail "site $site: bytes received"
  awk -v k="splitfed_site_sent_bytes_total{site=\"$site\"}" '$1 == k && $2 > 100000 { ok = 1 }
    END { exit !ok }' metrics.txt || fail "site $site: bytes sent"
  awk -v k="splitfed_site_last_seen_age_seconds{site=\"$site\"}" '$1 == k && $2 >= 0 && $2 < 30 {
    ok = 1 } END { exit !ok }' metrics.txt || fail "site $site: last seen"
  [[ "$(metric "splitfed_site_images{site=\"$site\"}")" -gt 0 ]] || fail "site $site: images"
  [[ "$(metric "splitfed_site_failures_total{site=\"$site\"}")" == 0 ]] || fail "site $site: failures"
  [[ "$(metric "splitfed_site_rounds_included_total{site=\"$site\"}")" == "$completed" ]] \
    || fail "site $site: rounds included"
done
# FedAvg weights of the two sites sum to one; Dice lies in [0, 1].
awk '$1 ~ /^splitfed_site_aggregation_weight\{/ { sum += $2; n++ }
     END { exit !(n == 2 && sum > 0.999 && sum < 1.001) }' metrics.txt || fail "weights"
awk '$1 == "splitfed_validation_dice" && $2 >= 0 && $2 <= 1 { ok = 1 } END { exit !ok }' \
  metrics.txt || fail "validation Dice"

# The dashboard: never open without the token, and read-only.
[[ "$(curl -s -o /dev/null -w '%{http_code}' "$base/")" == 401 ]] || fail "open without a token"
[[ "$(curl -s -o /dev/null -w '%{http_code}' "$base/api/state?token=0000000000000000")" == 401 ]] \
  || fail "a wrong token was let in"
[[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$base/api/state?token=$token")" == 405 ]] \
  || fail "POST was not refused"
curl -sf "$base/api/state" -H "Authorization: Bearer $token" | jq -e '.sites | length == 2' \
  > /dev/null || fail "the state API with a Bearer token"

# Headless Chromium, kept off every network but loopback.
chrome=(chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run
  --no-default-browser-check --disable-background-networking --disable-component-update
  --disable-sync --disable-extensions --user-data-dir="$work/chrome"
  --host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1" --virtual-time-budget=5000)
timeout 90 "${chrome[@]}" --dump-dom "$base/?token=$token" > dom.html 2> chrome.log \
  || fail "chromium: $(tail -5 chrome.log)"
grep -q '<tr data-site="a">' dom.html && grep -q '<tr data-site="b">' dom.html \
  || fail "the dashboard does not list both sites"
grep -Eq "id=\"round\">[0-9]+ / $rounds<" dom.html || fail "the dashboard shows no current round"
grep -q 'id="state">training<' dom.html || fail "the dashboard does not show the run training"
grep -q 'id="error"></div>' dom.html || fail "the dashboard shows an error"
grep -q '<canvas' dom.html || fail "no plot was drawn"
timeout 90 "${chrome[@]}" --window-size=1280,900 --screenshot="$out_dir/monitor-dashboard.png" \
  "$base/?token=$token" > /dev/null 2>> chrome.log || fail "no screenshot"
[[ -s "$out_dir/monitor-dashboard.png" ]] || fail "empty screenshot"

for pid in "${pids[@]}"; do timeout 240 tail --pid="$pid" -f /dev/null || fail "did not finish"; done
echo "monitor: promtool-valid metrics after $completed of $rounds rounds; dashboard shown" \
     "(screenshot $out_dir/monitor-dashboard.png)"
