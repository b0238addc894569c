#include "proto/method_codec.h"

#include "absl/strings/str_cat.h"

namespace splitfed {
namespace {

struct KindWire {
  v1::SiteMethod::Kind wire;
  MethodKind kind;
};
// Every learning method and its wire kind; PLAIN is the plain split training.
constexpr KindWire kKinds[] = {{v1::SiteMethod::PLAIN, MethodKind::kSplitFed},
                               {v1::SiteMethod::COLEARNING, MethodKind::kColearning},
                               {v1::SiteMethod::FEDNORO, MethodKind::kFedNoRo},
                               {v1::SiteMethod::FEDA3I, MethodKind::kFedA3I}};

struct RefinementWire {
  v1::SiteMethod::Refinement wire;
  RefinementMode mode;
};
constexpr RefinementWire kRefinements[] = {{v1::SiteMethod::REFINE_SOFT, RefinementMode::kSoft},
                                           {v1::SiteMethod::REFINE_HARD, RefinementMode::kHard},
                                           {v1::SiteMethod::REFINE_OFF, RefinementMode::kOff}};

}  // namespace

void EncodeSiteMethod(const SiteRoundMethod& method, v1::SiteMethod* out) {
  const MethodOptions& m = method.options;
  out->Clear();
  for (const KindWire& k : kKinds)
    if (m.kind == k.kind) out->set_kind(k.wire);
  out->set_warming_up(method.warming_up);
  for (const RefinementWire& r : kRefinements)
    if (m.refinement == r.mode) out->set_refinement(r.wire);
  out->set_kappa(m.kappa);
  out->set_consistency(m.consistency);
  out->set_consistency_weight(method.consistency_weight);
  out->set_learned_loss_weights(m.learned_loss_weights);
  out->set_tau_min(m.threshold.tau_min);
  out->set_min_gap(m.threshold.min_gap);
  out->set_fixed_tau(m.threshold.fixed_tau);
  out->set_distil(method.distil);
  out->set_distillation_weight(m.distillation_weight);
  out->set_teacher_beta(m.teacher_beta);
  out->set_detection(m.threshold.detection == colearning::DetectionMode::kRelative
                         ? v1::SiteMethod::DETECT_RELATIVE
                         : v1::SiteMethod::DETECT_ABSOLUTE);
  out->set_separation(m.threshold.separation);
}

absl::StatusOr<SiteRoundMethod> DecodeSiteMethod(const v1::SiteMethod& in) {
  SiteRoundMethod method;
  MethodOptions& m = method.options;
  bool kind_known = false;
  for (const KindWire& k : kKinds)
    if (in.kind() == k.wire) m.kind = k.kind, kind_known = true;
  if (!kind_known)
    return absl::InvalidArgumentError(
        absl::StrCat("the coordinator asks for method kind ", in.kind(),
                     ", which this site does not know (is it older than the coordinator?)"));
  bool refinement_known = false;
  for (const RefinementWire& r : kRefinements)
    if (in.refinement() == r.wire) m.refinement = r.mode, refinement_known = true;
  if (!refinement_known)
    return absl::InvalidArgumentError(
        absl::StrCat("unknown refinement ", in.refinement(), " in the round's method"));
  switch (in.detection()) {
    case v1::SiteMethod::DETECT_ABSOLUTE:
      m.threshold.detection = colearning::DetectionMode::kAbsolute;
      break;
    case v1::SiteMethod::DETECT_RELATIVE:
      m.threshold.detection = colearning::DetectionMode::kRelative;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown detection ", in.detection(), " in the round's method"));
  }
  m.kappa = in.kappa();
  m.consistency = in.consistency();
  m.learned_loss_weights = in.learned_loss_weights();
  m.threshold.tau_min = in.tau_min();
  m.threshold.min_gap = in.min_gap();
  m.threshold.fixed_tau = in.fixed_tau();
  m.threshold.separation = in.separation();
  m.distillation_weight = in.distillation_weight();
  m.teacher_beta = in.teacher_beta();
  method.warming_up = in.warming_up();
  method.consistency_weight = in.consistency_weight();
  method.distil = in.distil();
  if (auto s = m.Validate(); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat("the round's method: ", s.message()));
  if (!(method.consistency_weight >= 0 && method.consistency_weight <= 1))
    return absl::InvalidArgumentError(absl::StrCat(
        "the round's method: consistency weight ", method.consistency_weight, " is not in [0, 1]"));
  return method;
}

}  // namespace splitfed
