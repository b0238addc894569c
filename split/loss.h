// Segmentation losses: soft Dice + cross-entropy, with hard or soft targets.
#pragma once

#include <torch/types.h>

namespace splitfed {

struct SegLossOptions {
  double ce_weight = 1.0;      // λ_ce in L = Dice + λ_ce·CE
  double dice_smooth = 1e-5;   // keeps Dice defined when a class is absent from p and t
};

// Turns a target into per-class probabilities N×C×H×W: an int64 N×H×W tensor of class
// indices becomes one-hot; a float N×C×H×W tensor is taken as it is (a soft target).
torch::Tensor TargetProbabilities(const torch::Tensor& target, int64_t num_classes);

// 1 − mean over classes c of (2·Σ p_c t_c + s) / (Σ p_c + Σ t_c + s), sums over batch and
// pixels, background included.
torch::Tensor SoftDiceLoss(const torch::Tensor& probs, const torch::Tensor& target_probs,
                           double smooth);

// Mean over pixels of −Σ_c t_c · log softmax(logits)_c.
torch::Tensor SoftCrossEntropy(const torch::Tensor& logits, const torch::Tensor& target_probs);

// Dice(softmax(logits), t) + λ_ce · CE(logits, t); target hard (int64) or soft (float).
torch::Tensor SegmentationLoss(const torch::Tensor& logits, const torch::Tensor& target,
                               const SegLossOptions& options = {});

}  // namespace splitfed
