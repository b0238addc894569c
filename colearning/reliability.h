// SplitFed-CL's detection step (docs/ALGORITHM.md §9): how much a site's own masks agree with
// the global teacher, image by image, and which images to trust. Runs at the site only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace at {
class Tensor;
}

namespace splitfed::colearning {

// r_i: the mean foreground Dice between the teacher's argmax and the site's mask, over the
// foreground classes present in either (1 when neither has any foreground). `teacher_labels`
// and `masks` are N×H×W int64; returns N values in [0, 1].
std::vector<double> PerImageReliability(const at::Tensor& teacher_labels, const at::Tensor& masks,
                                        int64_t num_classes);

// A two-component 1-D Gaussian mixture fitted by expectation–maximisation.
struct TwoGaussians {
  double mean[2] = {0, 0};      // mean[0] <= mean[1]
  double variance[2] = {1, 1};
  double weight[2] = {0.5, 0.5};
  // Posterior probability that `x` comes from the low-mean component.
  double PosteriorLow(double x) const;
};
absl::StatusOr<TwoGaussians> FitTwoGaussians(const std::vector<double>& values,
                                             int iterations = 200);

// How a site decides which masks are unreliable, given the mixture over its teacher losses.
enum class DetectionMode {
  // The brief's rule: the low-loss component, and r_i >= τ_min; one population when the two
  // means are within δ.
  kAbsolute,
  // [ours] Only the site's own distribution counts: the low-loss component, with no τ_min, and
  // one population unless the two components are separated (Ashman's D >= `separation`). A
  // mediocre teacher then no longer flags every image.
  kRelative,
};
const char* DetectionModeName(DetectionMode mode);  // absolute | relative
bool ParseDetectionMode(const std::string& text, DetectionMode* mode);

struct ThresholdOptions {
  double tau_min = 0.75;     // 0.80 for binary tasks
  double min_gap = 0.05;     // δ: closer means → one population, all reliable
  bool fixed_tau = false;    // ablation: reliable ⇔ r_i >= tau_min, no mixture
  DetectionMode detection = DetectionMode::kAbsolute;
  double separation = 2.0;   // relative detection: the least Ashman's D of two populations
};

// Ashman's D of a two-component fit: √2·|μ1 − μ0| / √(σ0² + σ1²); above 2 the two are
// clearly apart (Ashman, Bird & Zepf, AJ 1994).
double AshmanD(const TwoGaussians& g);

// Which images are reliable, from their teacher losses ℓ_i and reliabilities r_i (see
// DetectionMode); every image when there are fewer than 4 images to fit.
std::vector<bool> ReliableImages(const std::vector<double>& losses,
                                 const std::vector<double>& reliability,
                                 const ThresholdOptions& options);

// q_k: the share of reliable images.
double SiteReliability(const std::vector<bool>& reliable);

}  // namespace splitfed::colearning
