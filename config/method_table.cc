#include "config/method_table.h"

#include "absl/strings/str_cat.h"
#include "status/status_macros.h"

namespace splitfed::config {

absl::Status ReadMethodTable(TomlTable& m, MethodOptions* out) {
  MethodOptions& o = *out;
  RETURN_IF_ERROR(m.Int("warmup_rounds", &o.warmup_rounds, 0, 100000));
  RETURN_IF_ERROR(m.Int("warmup_patience", &o.warmup_patience, 0, 100000));
  RETURN_IF_ERROR(m.Double("teacher_beta", &o.teacher_beta, 0, 0.999));
  RETURN_IF_ERROR(m.Int("ramp_rounds", &o.ramp_rounds, 0, 100000));
  RETURN_IF_ERROR(m.Double("tau_min", &o.threshold.tau_min, 0, 1));
  RETURN_IF_ERROR(m.Double("min_gap", &o.threshold.min_gap, 0, 1e6));
  RETURN_IF_ERROR(m.Double("separation", &o.threshold.separation, 0, 1e6));
  std::string detection = colearning::DetectionModeName(o.threshold.detection);
  RETURN_IF_ERROR(m.Choice("detection", {"absolute", "relative"}, &detection));
  colearning::ParseDetectionMode(detection, &o.threshold.detection);
  std::string threshold = o.threshold.fixed_tau ? "fixed" : "gmm";
  RETURN_IF_ERROR(m.Choice("threshold", {"gmm", "fixed"}, &threshold));
  o.threshold.fixed_tau = threshold == "fixed";
  RETURN_IF_ERROR(m.Double("kappa", &o.kappa, 0.01, 1));
  std::string refinement = RefinementName(o.refinement);
  RETURN_IF_ERROR(m.Choice("refinement", {"soft", "hard", "off"}, &refinement));
  RETURN_IF_ERROR(ParseRefinement(refinement, &o.refinement));
  RETURN_IF_ERROR(m.Bool("consistency", &o.consistency));
  std::string weights = o.learned_loss_weights ? "learned" : "fixed";
  RETURN_IF_ERROR(m.Choice("loss_weights", {"learned", "fixed"}, &weights));
  o.learned_loss_weights = weights == "learned";
  RETURN_IF_ERROR(m.Double("distillation_weight", &o.distillation_weight, 0, 1));
  return absl::OkStatus();
}

}  // namespace splitfed::config
