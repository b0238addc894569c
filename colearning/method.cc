#include "colearning/method.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace splitfed {

const std::vector<std::string>& KnownMethodNames() {
  static const std::vector<std::string> names = {"splitfed", "splitfed-cl", "fednoro", "feda3i"};
  return names;
}

const char* RefinementName(RefinementMode mode) {
  switch (mode) {
    case RefinementMode::kSoft: return "soft";
    case RefinementMode::kHard: return "hard";
    case RefinementMode::kOff: return "off";
  }
  return "soft";
}

absl::Status ParseRefinement(const std::string& text, RefinementMode* mode) {
  for (RefinementMode m : {RefinementMode::kSoft, RefinementMode::kHard, RefinementMode::kOff})
    if (text == RefinementName(m)) {
      *mode = m;
      return absl::OkStatus();
    }
  return absl::InvalidArgumentError(
      absl::StrCat("refinement must be soft, hard or off, got '", text, "'"));
}

absl::Status MethodOptions::Validate() const {
  const auto& known = KnownMethodNames();
  if (std::find(known.begin(), known.end(), name) == known.end())
    return absl::InvalidArgumentError(absl::StrCat("unknown method '", name, "' (known: ",
                                                   absl::StrJoin(known, ", "), ")"));
  if (warmup_rounds < 0) return absl::InvalidArgumentError("warmup_rounds must be >= 0");
  if (!(teacher_beta >= 0 && teacher_beta < 1))
    return absl::InvalidArgumentError("teacher_beta must be in [0, 1)");
  if (!(kappa > 0 && kappa <= 1)) return absl::InvalidArgumentError("kappa must be in (0, 1]");
  if (ramp_rounds < 0) return absl::InvalidArgumentError("ramp_rounds must be >= 0");
  if (!(threshold.tau_min >= 0 && threshold.tau_min <= 1))
    return absl::InvalidArgumentError("tau_min must be in [0, 1]");
  if (!(threshold.min_gap >= 0)) return absl::InvalidArgumentError("min_gap must be >= 0");
  if (!(threshold.separation >= 0 && std::isfinite(threshold.separation)))
    return absl::InvalidArgumentError("separation must be a finite number >= 0");
  if (warmup_patience < 0) return absl::InvalidArgumentError("warmup_patience must be >= 0");
  if (!(distillation_weight >= 0 && distillation_weight <= 1))
    return absl::InvalidArgumentError("distillation_weight must be in [0, 1]");
  return absl::OkStatus();
}

std::string MethodOptions::DefaultAggregation() const {
  if (name == "splitfed-cl") return "reliability";
  if (name == "fednoro") return "distance";
  if (name == "feda3i") return "layerwise-quality";
  return "fedavg";
}

double MethodOptions::ConsistencyWeight(int64_t round) const {
  if (WarmingUp(round)) return 0.0;
  const int64_t t = round - warmup_rounds;
  if (t >= ramp_rounds) return 1.0;
  const double x = 1.0 - static_cast<double>(t) / ramp_rounds;
  return std::exp(-5.0 * x * x);
}

double WarmUpTracker::ConsistencyWeight(int64_t round) const {
  MethodOptions effective = method_;
  effective.warmup_rounds = end_;
  return effective.ConsistencyWeight(round);
}

bool WarmUpTracker::Observe(int64_t round, double mean_validation_loss) {
  if (method_.warmup_patience <= 0 || !WarmingUp(round) || round >= end_) return false;
  if (since_best_ < 0 || mean_validation_loss < best_) {
    best_ = mean_validation_loss;
    since_best_ = 0;
    return false;
  }
  if (++since_best_ < method_.warmup_patience) return false;
  end_ = round;
  return true;
}

}  // namespace splitfed
