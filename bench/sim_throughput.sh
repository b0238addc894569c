#!/bin/sh
# The simulator's speed and memory (docs/PERFORMANCE.md, "Simulator"):
#  1. `splitfed sim` against a single-process PyTorch SplitFed loop of the same model and
#     settings (3 sites, f = 16, 64×64, batch 8, same rounds, same thread budget);
#  2. images/s and peak memory with 4, 16 and 64 simulated sites.
# Needs Debian's python3-torch for part 1 (apt-get install python3-torch); part 2 runs without.
#   bench/sim_throughput.sh build/splitfed bench/results/sim_throughput.json [CORES] [REPEATS]
# Both sides are pinned to the same CORES cores (taskset). The simulator uses its default
# thread split (cores ÷ sites intra-op threads per op); PyTorch is run with 1 and with CORES
# intra-op threads and the faster of the two is the reference.
set -eu
splitfed=$(realpath "$1")
out=$2
cores=${3:-2}
pin="taskset -c 0-$((cores - 1))"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
here=$(dirname "$(realpath "$0")")
py=${PYTHON:-/usr/bin/python3}  # Debian's interpreter, where python3-torch lives

# Writes an experiment: $1 sites, $2 images per site, $3 rounds.
experiment() {
  cat > "$work/sim-$1.toml" <<EOF
name = "bench $1 sites"
out = "$work/out-$1"
[data]
image_size = 64
num_classes = 4
images_per_site = $2
test_images = 48
[federation]
sites = $1
rounds = $3
local_epochs = 1
batch_size = 8
learning_rate = 0.002
base_width = 16
depth = 4
[experiment]
methods = ["splitfed"]
seeds = [1]
[[noise]]
name = "clean"
noisy_sites = 0.0
EOF
}

# Runs one experiment; prints "images_per_second peak_rss_mib".
measure() {
  $pin "$splitfed" sim --config "$work/sim-$1.toml" --quiet > "$work/log-$1" 2>&1
  ips=$(tail -n +2 "$work/out-$1/runs.csv" | cut -d, -f7)
  rss=$(sed -n 's/.*peak memory \([0-9]*\) MiB.*/\1/p' "$work/log-$1")
  echo "$ips $rss"
}

# The comparison, repeated and interleaved (this shared machine drifts by tens of percent):
# each repeat runs the simulator, then PyTorch with 1 and with CORES threads; the ratio of a
# repeat is the simulator over the faster PyTorch, and the median ratio is reported.
rounds=10
repeats=${4:-3}
experiment 3 48 $rounds
sim_runs=""
python_json=""
ratios=""
have_torch=0
"$py" -c "import torch" 2>/dev/null && have_torch=1 ||
  echo "python3-torch is not installed: skipping the PyTorch comparison" >&2
for r in $(seq "$repeats"); do
  set -- $(measure 3)
  sim_runs="$sim_runs{\"images_per_second\": $1, \"peak_rss_mib\": $2},"
  sim_ips=$1
  [ $have_torch -eq 1 ] || continue
  best=0
  for t in 1 "$cores"; do
    run=$($pin "$py" "$here/pytorch_splitfed.py" --sites 3 --images-per-site 48 \
      --rounds $rounds --threads "$t")
    ips=$(echo "$run" | "$py" -c "import json,sys; print(json.load(sys.stdin)['images_per_second'])")
    python_json="$python_json$run,"
    best=$("$py" -c "print(max($best, $ips))")
  done
  ratios="$ratios$("$py" -c "print(round($sim_ips / $best, 3))"),"
done
median=null
[ -n "$ratios" ] && median=$("$py" -c "import statistics; print(statistics.median([${ratios%,}]))")

scaling=""
for sites in 4 16 64; do
  experiment $sites 24 3
  set -- $(measure $sites)
  scaling="$scaling{\"sites\": $sites, \"images_per_site\": 24, \"rounds\": 3, \"images_per_second\": $1, \"peak_rss_mib\": $2},"
done

cat > "$out" <<EOF
{
  "machine": "$(nproc) cpus, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)",
  "cores": $cores,
  "comparison": {"sites": 3, "images_per_site": 48, "rounds": $rounds, "repeats": $repeats},
  "simulator_3_sites": [${sim_runs%,}],
  "pytorch_3_sites": [${python_json%,}],
  "simulator_over_pytorch_per_repeat": [${ratios%,}],
  "simulator_over_pytorch_median": $median,
  "scaling": [${scaling%,}]
}
EOF
cat "$out"
