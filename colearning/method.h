// A learning method as a run option (docs/ALGORITHM.md §3-4, §10): what each site computes
// besides plain split training, and which aggregation rule the coordinator uses by default.
// Shared by the coordinator (which decides per round), the CLI and the simulator.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "colearning/reliability.h"

namespace splitfed {

enum class RefinementMode { kSoft, kHard, kOff };

// The learning methods. A switch over this enum is how each side says what a method does, so
// the compiler (-Wswitch) names every place a new method must be handled.
enum class MethodKind {
  kSplitFed,    // "splitfed": plain split training with FedAvg
  kColearning,  // "splitfed-cl"
  kFedNoRo,     // "fednoro"
  kFedA3I,      // "feda3i"
};

struct MethodOptions {
  MethodKind kind = MethodKind::kSplitFed;
  int64_t warmup_rounds = 3;  // R_w: every image reliable, FedAvg weights
  double teacher_beta = 0.0;  // θ_T ← β·θ_T + (1−β)·θ_G; 0: the last global model
  // SplitFed-CL
  RefinementMode refinement = RefinementMode::kSoft;
  double kappa = 0.8;                // hard refinement's least teacher probability
  bool consistency = true;
  int64_t ramp_rounds = 5;           // T_r of the consistency ramp-in
  bool learned_loss_weights = true;  // false: s fixed at 0 (equal weights)
  colearning::ThresholdOptions threshold;
  // FedNoRo [ours: reconstruction]
  double distillation_weight = 0.8;  // λ in (1−λ)·L_seg + λ·KL(teacher ‖ student)

  // [ours] The warm-up may end early: after `warmup_patience` rounds in a row without a new
  // lowest mean validation loss of the sites (0: it lasts warmup_rounds). The teacher then
  // starts judging labels once it has stopped improving, not at a fixed round.
  int64_t warmup_patience = 0;

  absl::Status Validate() const;
  const char* name() const;  // the method's name in configs, reports and the store
  bool UsesTeacher() const { return kind != MethodKind::kSplitFed; }
  // How many copies of each training image a site's batches carry through the body: two for
  // SplitFed-CL with its consistency term (the clean batch and a perturbed copy, one split
  // pass; colearning/site_objective.cc), one otherwise. Bounds the body's work for a site.
  int64_t TrainingViewsPerImage() const {
    return kind == MethodKind::kColearning && consistency ? 2 : 1;
  }
  bool WarmingUp(int64_t round) const { return round <= warmup_rounds; }
  // The aggregation rule a run uses when none is named: fedavg, reliability, distance,
  // layerwise-quality.
  std::string DefaultAggregation() const;
  // The consistency term's weight [ours: the ramp starts after the warm-up, since the
  // teacher is not trusted before]: 0 during the warm-up, then with t = round − R_w,
  // w_c = exp(−5·(1 − t/T_r)²) for t < T_r and 1 after.
  double ConsistencyWeight(int64_t round) const;
};

// When a teacher method's warm-up ends: after method.warmup_rounds, or earlier once the
// sites' mean validation loss has not reached a new low for warmup_patience rounds.
class WarmUpTracker {
 public:
  explicit WarmUpTracker(const MethodOptions& method) : method_(method), end_(method.warmup_rounds) {}
  bool WarmingUp(int64_t round) const { return method_.UsesTeacher() && round <= end_; }
  int64_t end() const { return end_; }  // the warm-up's last round
  // The method's consistency weight, its ramp-in counted from the warm-up's actual end.
  double ConsistencyWeight(int64_t round) const;
  // A completed warm-up round's mean validation loss over the included sites. Returns true
  // when this ends the warm-up (this round is then its last).
  bool Observe(int64_t round, double mean_validation_loss);

  // What it has learnt so far, for a coordinator that resumes a run.
  struct Progress {
    int64_t end = 0;
    double best = 0;
    int64_t since_best = -1;
  };
  Progress progress() const { return {end_, best_, since_best_}; }
  void Restore(const Progress& p) {
    end_ = p.end;
    best_ = p.best;
    since_best_ = p.since_best;
  }

 private:
  MethodOptions method_;
  int64_t end_;
  double best_ = 0;
  int64_t since_best_ = -1;  // -1: nothing observed yet
};

// One round's method as a site receives it (proto/method_codec.h carries it on the wire): the
// run's options that sites use, and what the coordinator decided for this round and site.
struct SiteRoundMethod {
  MethodOptions options;          // warmup_rounds, ramp_rounds, warmup_patience stay at the coordinator
  bool warming_up = false;        // every image reliable this round
  double consistency_weight = 0;  // w_c(t)
  bool distil = false;            // FedNoRo: this site was flagged noisy
};

const std::vector<MethodKind>& AllMethods();
const char* MethodName(MethodKind kind);  // splitfed | splitfed-cl | fednoro | feda3i
absl::Status ParseMethod(const std::string& text, MethodKind* kind);
const char* RefinementName(RefinementMode mode);                      // soft | hard | off
absl::Status ParseRefinement(const std::string& text, RefinementMode* mode);

}  // namespace splitfed
