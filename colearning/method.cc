#include "colearning/method.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace splitfed {

const std::vector<MethodKind>& AllMethods() {
  static const std::vector<MethodKind> all = {MethodKind::kSplitFed, MethodKind::kColearning,
                                              MethodKind::kFedNoRo, MethodKind::kFedA3I};
  return all;
}

const char* MethodName(MethodKind kind) {
  switch (kind) {
    case MethodKind::kSplitFed: return "splitfed";
    case MethodKind::kColearning: return "splitfed-cl";
    case MethodKind::kFedNoRo: return "fednoro";
    case MethodKind::kFedA3I: return "feda3i";
  }
  return "splitfed";
}

absl::Status ParseMethod(const std::string& text, MethodKind* kind) {
  std::vector<std::string> names;
  for (MethodKind k : AllMethods()) {
    if (text == MethodName(k)) {
      *kind = k;
      return absl::OkStatus();
    }
    names.push_back(MethodName(k));
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown method '", text, "' (known: ",
                                                 absl::StrJoin(names, ", "), ")"));
}

const char* MethodOptions::name() const { return MethodName(kind); }

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
  const auto& known = AllMethods();
  if (std::find(known.begin(), known.end(), kind) == known.end())
    return absl::InvalidArgumentError(
        absl::StrCat("unknown method kind ", static_cast<int>(kind)));
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
  switch (kind) {
    case MethodKind::kSplitFed: return "fedavg";
    case MethodKind::kColearning: return "reliability";
    case MethodKind::kFedNoRo: return "distance";
    case MethodKind::kFedA3I: return "layerwise-quality";
  }
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
