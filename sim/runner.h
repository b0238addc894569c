// Runs an experiment: for each noise setting, method and seed, a real coordinator and real
// site clients in this process, talking gRPC over the in-process channel or mutual TLS on
// 127.0.0.1. Scores the global model on the clean test set after every round.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "sim/experiment.h"
#include "sim/site_data.h"

namespace splitfed::sim {

struct Scores {
  double dice = 0, iou = 0, hd95 = 0;   // mean over foreground classes and test images
  std::vector<double> dice_per_class;  // classes 1..C-1
};

struct SiteRoundResult {
  std::string site;
  bool included = false;
  double train_loss = 0;
  double validation_dice = 0;  // on the site's own (possibly noisy) validation masks
  double validation_loss = -1;  // the same masks' loss (−1: not reported)
  double aggregation_weight = 0;
  double reliability = 1;
  int64_t bytes_in = 0, bytes_out = 0;
  // SplitFed-CL's detection against the images the simulator corrupted, in the rounds after
  // the warm-up (−1: not scored, e.g. another method or a warm-up round; for precision /
  // recall also when no image was flagged / corrupted). Counts over the site's training images.
  int64_t flagged = -1;
  int64_t flagged_corrupted = -1;  // flagged and corrupted
  int64_t corrupted = -1;          // corrupted, flagged or not
  double detection_precision = -1, detection_recall = -1;
};

struct RoundResult {
  int64_t round = 0;
  Scores test;
  std::vector<SiteRoundResult> sites;
};

struct RunResult {
  std::string method;
  std::string noise;  // the setting's name ("clean labels" for the oracle)
  uint64_t seed = 0;
  bool finished = false;
  std::vector<RoundResult> rounds;
  Scores final_test;
  // The round a consortium would keep without test labels: the lowest mean of the included
  // sites' own validation losses (their possibly noisy masks), and its test scores.
  int64_t selected_round = 0;
  Scores selected_test;
  double seconds = 0;
  int64_t images_trained = 0;  // site images × local epochs × rounds
  std::string model_path;
};

// What the progress display is told; any thread.
struct ProgressEvent {
  std::string method, noise, site;
  uint64_t seed = 0;
  int64_t run_index = 0, run_count = 0;  // 1-based
  int64_t round = 0, rounds = 0, epoch = 0;
  double loss = 0;
  bool round_closed = false;  // the coordinator finished a round (test_dice is set)
  double test_dice = 0;
};

// The runs an experiment consists of, in order: per seed, the oracle once (its labels are
// clean whatever the noise setting), then every other method under every noise setting.
struct PlannedRun {
  std::string method;
  const NoiseSetting* noise;  // the setting whose images and partition are used
  std::string noise_name;
  uint64_t seed;
};
std::vector<PlannedRun> PlanRuns(const ExperimentConfig& config);

// Picks `selected_round` and `selected_test` from the rounds' site validation losses (the last
// round when no site reported one).
void SelectRoundByValidationLoss(RunResult& run);

// Which planned runs to do: every one, or only those whose method is in `only_methods` (when
// not empty); with `resume`, the runs already recorded in the output folder are skipped.
struct RunFilter {
  std::vector<std::string> only_methods;
  bool resume = false;
};
// The planned runs that `filter` keeps, in plan order. A method in `only_methods` that the
// experiment does not run is an error.
absl::StatusOr<std::vector<PlannedRun>> SelectRuns(const ExperimentConfig& config,
                                                   const RunFilter& filter);

class ExperimentRunner {
 public:
  ExperimentRunner(ExperimentConfig config, std::function<void(const ProgressEvent&)> progress,
                   RunFilter filter = {});
  // Runs every planned run that the filter keeps, writing results into config.out_dir as each
  // finishes (so a stop keeps what finished): runs/<run>.json per run, and the tables over
  // every run recorded there (so several processes may share one folder with --only).
  // Returns the runs this call finished.
  absl::StatusOr<std::vector<RunResult>> Run();
  // Safe from any thread: ends the current run promptly; it is not recorded.
  void Stop();

 private:
  absl::StatusOr<RunResult> RunOne(const PlannedRun& plan, const SimData& data, int64_t index,
                                   int64_t count);

  ExperimentConfig config_;
  std::function<void(const ProgressEvent&)> progress_;
  RunFilter filter_;
  std::atomic<bool> stopping_{false};
  // Wakes the current run's supervision: Stop(), a site that gave up, the run's end.
  std::mutex supervise_mutex_;
  std::condition_variable supervise_;
  void WakeSupervision();
};

}  // namespace splitfed::sim
