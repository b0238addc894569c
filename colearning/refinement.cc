#include "colearning/refinement.h"

#include <torch/torch.h>

#include <cmath>

namespace splitfed::colearning {

at::Tensor Confidence(const at::Tensor& probs) {
  const double log_c = std::log(static_cast<double>(probs.size(1)));
  // 0·log 0 = 0: clamp inside the log only.
  const torch::Tensor entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1);
  return (1 - entropy / log_c).clamp(0, 1);
}

at::Tensor FusedPrediction(const at::Tensor& teacher_probs, const at::Tensor& student_probs) {
  const torch::Tensor student = student_probs.detach();
  const torch::Tensor c_t = Confidence(teacher_probs), c_s = Confidence(student);
  const torch::Tensor total = c_t + c_s;
  const torch::Tensor w_t =
      torch::where(total > 0, c_t / total.clamp_min(1e-12), torch::full_like(total, 0.5))
          .unsqueeze(1);
  return w_t * teacher_probs + (1 - w_t) * student;
}

at::Tensor SoftRefinedTargets(const at::Tensor& masks, const at::Tensor& fused,
                              const std::vector<double>& reliability) {
  const int64_t classes = fused.size(1);
  const torch::Tensor onehot =
      torch::one_hot(masks, classes).permute({0, 3, 1, 2}).to(fused.scalar_type());
  const torch::Tensor r =
      torch::tensor(reliability, fused.options()).view({-1, 1, 1, 1});
  return r * onehot + (1 - r) * fused.detach();
}

at::Tensor HardRefinedTargets(const at::Tensor& masks, const at::Tensor& fused,
                              const at::Tensor& teacher_probs, double kappa) {
  const auto [top, teacher_labels] = teacher_probs.max(1);
  const torch::Tensor replace = (teacher_labels != masks) & (top >= kappa);
  return torch::where(replace, fused.argmax(1), masks);
}

at::Tensor ClampLogVariances(const at::Tensor& log_variances) {
  return log_variances.clamp(-kMaxLogVariance, kMaxLogVariance);
}

at::Tensor WeightedLoss(const at::Tensor& log_variances,
                        const std::vector<std::optional<at::Tensor>>& terms) {
  const torch::Tensor s = ClampLogVariances(log_variances);
  torch::Tensor total = torch::zeros({}, log_variances.options());
  for (size_t j = 0; j < terms.size(); ++j) {
    if (!terms[j]) continue;
    total = total + 0.5 * torch::exp(-s[j]) * *terms[j] + 0.5 * s[j];
  }
  return total;
}

}  // namespace splitfed::colearning
