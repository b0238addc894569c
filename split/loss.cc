#include "split/loss.h"

#include <torch/torch.h>

namespace splitfed {

torch::Tensor TargetProbabilities(const torch::Tensor& target, int64_t num_classes) {
  if (target.scalar_type() == torch::kLong) {
    TORCH_CHECK(target.dim() == 3, "hard target must be N×H×W, got ", target.sizes());
    return torch::one_hot(target, num_classes).permute({0, 3, 1, 2}).to(torch::kFloat);
  }
  TORCH_CHECK(target.dim() == 4 && target.size(1) == num_classes,
              "soft target must be N×", num_classes, "×H×W, got ", target.sizes());
  return target;
}

torch::Tensor SoftDiceLoss(const torch::Tensor& probs, const torch::Tensor& target_probs,
                           double smooth) {
  TORCH_CHECK(probs.sizes() == target_probs.sizes(), "Dice: prediction ", probs.sizes(),
              " and target ", target_probs.sizes(), " differ");
  const std::vector<int64_t> reduce = {0, 2, 3};
  const torch::Tensor intersection = (probs * target_probs).sum(reduce);
  const torch::Tensor total = probs.sum(reduce) + target_probs.sum(reduce);
  const torch::Tensor dice = (2.0 * intersection + smooth) / (total + smooth);
  return 1.0 - dice.mean();
}

torch::Tensor SoftCrossEntropy(const torch::Tensor& logits, const torch::Tensor& target_probs) {
  TORCH_CHECK(logits.sizes() == target_probs.sizes(), "CE: logits ", logits.sizes(),
              " and target ", target_probs.sizes(), " differ");
  return -(target_probs * torch::log_softmax(logits, 1)).sum(1).mean();
}

torch::Tensor SegmentationLoss(const torch::Tensor& logits, const torch::Tensor& target,
                               const SegLossOptions& options) {
  TORCH_CHECK(logits.dim() == 4, "logits must be N×C×H×W, got ", logits.sizes());
  const torch::Tensor t = TargetProbabilities(target, logits.size(1));
  torch::Tensor loss = SoftDiceLoss(torch::softmax(logits, 1), t, options.dice_smooth);
  if (options.ce_weight != 0.0) loss = loss + options.ce_weight * SoftCrossEntropy(logits, t);
  return loss;
}

}  // namespace splitfed
