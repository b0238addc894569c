// SplitFed-CL's correction step (docs/ALGORITHM.md §9): fusing the teacher's and the
// student's predictions by their confidence, refining unreliable masks towards the fusion,
// and the trainable weighting of the loss terms. Runs at the site only.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace at {
class Tensor;
}

namespace splitfed::colearning {

// c(p) = 1 − H(p) / log C per pixel, for class probabilities N×C×H×W; returns N×H×W in [0, 1]
// (1: all mass on one class, 0: uniform).
at::Tensor Confidence(const at::Tensor& probs);

// q = w_T·p_T + (1 − w_T)·p_S with w_T = c_T / (c_T + c_S) per pixel (½ where both are 0).
// The student's probabilities are detached: the fusion is a target, not a path for gradients.
at::Tensor FusedPrediction(const at::Tensor& teacher_probs, const at::Tensor& student_probs);

// Soft refined targets ỹ_i = r_i·onehot(y_i) + (1 − r_i)·q_i; `masks` N×H×W int64,
// `fused` N×C×H×W, `reliability` N values. Returns N×C×H×W.
at::Tensor SoftRefinedTargets(const at::Tensor& masks, const at::Tensor& fused,
                              const std::vector<double>& reliability);

// Hard option: argmax q on the pixels where the teacher's argmax disagrees with y and its top
// probability is at least κ; y elsewhere. Returns N×H×W int64.
at::Tensor HardRefinedTargets(const at::Tensor& masks, const at::Tensor& fused,
                              const at::Tensor& teacher_probs, double kappa = 0.8);

// The bound on each loss weight's log-variance s_j, wherever it is kept: in the loss, after a
// site's optimiser step and when the coordinator averages the sites' values [ours: keeps
// exp(−s) in [e^−5, e^5], so no term is silenced or blown up].
constexpr double kMaxLogVariance = 5;
at::Tensor ClampLogVariances(const at::Tensor& log_variances);

// Trainable loss weighting (Kendall, Gal and Cipolla, CVPR 2018): Σ_j ½·exp(−s_j)·L_j + ½·s_j
// over the terms that are present (a term with no images this batch contributes 0), with
// s = `log_variances` (one per term) clamped to ±kMaxLogVariance.
at::Tensor WeightedLoss(const at::Tensor& log_variances,
                        const std::vector<std::optional<at::Tensor>>& terms);

}  // namespace splitfed::colearning
