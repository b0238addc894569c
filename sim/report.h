// What the simulator leaves in its output folder: metrics per round (CSV and JSON lines), the
// summary (JSON and Markdown), SVG plots and a noise preview per site.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "sim/experiment.h"
#include "sim/runner.h"
#include "sim/site_data.h"

namespace splitfed::sim {

// "splitfed" + "40% noisy" → "splitfed-40-noisy": safe as a file name.
std::string RunSlug(const std::string& method, const std::string& noise);

// One line of the summary: a method under a noise setting, over its seeds.
struct SummaryRow {
  std::string method, noise;
  std::vector<uint64_t> seeds;
  double dice_mean = 0, dice_std = 0, iou_mean = 0, iou_std = 0, hd95_mean = 0, hd95_std = 0;
  std::vector<double> dice_per_class_mean;
  bool has_delta = false;  // an oracle run exists to compare with
  double delta_dice = 0;   // dice_mean − the oracle's dice_mean (same seeds)
  // At the round chosen by the sites' validation loss (RunResult::selected_round).
  double selected_dice_mean = 0, selected_dice_std = 0, selected_delta_dice = 0;
  // SplitFed-CL's flags against the corrupted images, pooled over the sites, the rounds after
  // the warm-up and the seeds: flagged-and-corrupted over flagged (precision) and over
  // corrupted (recall); −1 when nothing was flagged / corrupted.
  double detection_precision = -1, detection_recall = -1;
};
std::vector<SummaryRow> Summarize(const std::vector<RunResult>& runs);

// One line per SplitFed-CL row (the method or a variant of it) whose noise setting also has a
// FedAvg (`splitfed`) row and an oracle: how many of the Dice points FedAvg loses to the noise
// it recovers, e.g. "splitfed-cl recovers 4.1 of the 5.6 Dice points FedAvg loses to label
// noise (80% noisy sites)".
std::vector<std::string> RecoveryLines(const ExperimentConfig& config,
                                       const std::vector<SummaryRow>& rows);

// Each finished run is kept whole in runs/<method>-<noise>-seed<N>.json, so that an experiment
// can be resumed, or split over several processes, and its tables rebuilt from the folder.
std::string RunFileName(const RunResult& run);
absl::Status SaveRun(const ExperimentConfig& config, const RunResult& run);
// Every run recorded in `out_dir`/runs, in the order of the experiment's plan (runs the plan
// does not name come last). A file that cannot be read is an error naming it.
absl::StatusOr<std::vector<RunResult>> LoadRuns(const ExperimentConfig& config);

// (Re)writes runs.csv (time, images/s, final scores per run), rounds.csv, rounds.jsonl, site_rounds.csv, site_rounds.jsonl, summary.json,
// summary.md and plots/*.svg from every finished run.
absl::Status WriteResults(const ExperimentConfig& config, const std::vector<RunResult>& runs);

// preview/<noise>/<site>.png: a few of the site's images with the clean outline in green and
// the site's own (noisy) outline in red; corrupted images first.
absl::Status WriteNoisePreviews(const ExperimentConfig& config, const NoiseSetting& noise,
                                const SimData& data);

// A line chart as a self-contained SVG document.
struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;
};
std::string LineChartSvg(const std::string& title, const std::string& x_label,
                         const std::string& y_label, const std::vector<Series>& series);

}  // namespace splitfed::sim
