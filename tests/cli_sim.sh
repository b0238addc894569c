#!/usr/bin/env bash
# `splitfed sim` through the real executable: a small experiment file runs to the end and
# says where its results are; Ctrl-C (SIGINT) mid-experiment stops it promptly, keeps the
# runs that finished and exits non-zero. Every wait is bounded.
set -euo pipefail
splitfed="$1"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

cat > tiny.toml <<'TOML'
name = "tiny"
out = "results"
[data]
image_size = 32
images_per_site = 12
test_images = 8
[federation]
sites = 2
rounds = 2
local_epochs = 1
depth = 3
base_width = 8
[experiment]
methods = ["splitfed", "oracle"]
[[noise]]
name = "one dilated"
site = [{ model = "none" }, { model = "dilation", image_fraction = 1.0 }]
TOML
timeout 120 "$splitfed" sim --config tiny.toml > out.txt 2> err.txt
grep -q "2 of 2 runs finished" out.txt || { cat out.txt err.txt; exit 1; }
grep -q "Results: $work/results" out.txt || { echo "no results path"; cat out.txt; exit 1; }
grep -q "| splitfed | one dilated | 1 |" out.txt || { echo "no summary table"; cat out.txt; exit 1; }
for f in config.toml runs.csv rounds.csv site_rounds.jsonl summary.json summary.md \
  plots/dice-one-dilated.svg preview/one-dilated/site-2.png models/oracle-clean-labels-seed1/final.pt; do
  [[ -s "results/$f" ]] || { echo "missing results/$f"; exit 1; }
done
# The final model segments images like any other.
"$splitfed" phantoms --out phantoms --count 2 --size 32 > /dev/null
"$splitfed" segment --model results/models/splitfed-one-dilated-seed1/final.pt \
  --input phantoms/images --output masks > /dev/null
[[ $(ls masks | wc -l) -eq 2 ]] || { echo "segment wrote no masks"; exit 1; }

# Many seeds of many rounds: interrupted after the first run has had time to finish.
sed -i 's/^rounds = 2/rounds = 40/; s/^methods = .*/methods = ["splitfed"]\nseeds = [1, 2, 3, 4, 5, 6]/' tiny.toml
"$splitfed" sim --config tiny.toml --out stopped > stop.out 2> stop.err &
pid=$!
for _ in $(seq 600); do  # until a first run is recorded (at most 60 s)
  [[ -s stopped/runs.csv ]] && break
  sleep 0.1
done
kill -INT "$pid"
status=0
for _ in $(seq 300); do  # it must exit within 30 s
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then echo "did not stop on SIGINT"; kill -9 "$pid"; exit 1; fi
wait "$pid" || status=$?
[[ $status -ne 0 ]] || { echo "an interrupted sim must exit non-zero"; exit 1; }
grep -q "stopping; finished runs are kept" stop.err || { cat stop.err; exit 1; }
[[ $(tail -n +2 stopped/runs.csv | wc -l) -ge 1 ]] || { echo "finished runs were lost"; exit 1; }
grep -q "runs finished" stop.out || { cat stop.out; exit 1; }
echo "cli_sim: ok"
