#include "colearning/site_objective.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "colearning/refinement.h"
#include "colearning/reliability.h"
#include "status/status_macros.h"

namespace splitfed::colearning {

absl::StatusOr<TeacherOutputs> RunTeacher(UNetSegment front, UNetSegment back,
                                          const SegmentationSet& set, BodyLink& link,
                                          const SegLossOptions& loss, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  front->eval();
  back->eval();
  std::vector<torch::Tensor> probs;
  TeacherOutputs out;
  for (int64_t start = 0; start < set.size(); start += batch_size) {
    const int64_t end = std::min(start + batch_size, set.size());
    SkipSet skips;
    const torch::Tensor a1 = front->forward(set.images.slice(0, start, end), skips);
    ASSIGN_OR_RETURN(torch::Tensor a2, link.Teacher(a1));
    const torch::Tensor logits = back->forward(a2, skips);
    probs.push_back(torch::softmax(logits, 1));
    for (int64_t i = start; i < end; ++i)
      out.losses.push_back(SegmentationLoss(logits.slice(0, i - start, i - start + 1),
                                            set.masks.slice(0, i, i + 1), loss)
                               .item<double>());
  }
  out.probs = torch::cat(probs);
  out.labels = out.probs.argmax(1);
  return out;
}

torch::Tensor Perturb(const torch::Tensor& images, std::mt19937_64& rng) {
  torch::NoGradGuard no_grad;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  at::Generator noise = at::make_generator<at::CPUGeneratorImpl>(rng());
  std::vector<torch::Tensor> out;
  const torch::Tensor blur_kernel =
      (torch::tensor({1.0f, 2.0f, 1.0f}).outer(torch::tensor({1.0f, 2.0f, 1.0f})) / 16)
          .view({1, 1, 3, 3});
  for (int64_t i = 0; i < images.size(0); ++i) {
    // The magnitudes are meant for intensities in [0, 1]: perturb on that scale and map back,
    // whatever the images' normalisation.
    torch::Tensor x = images[i];
    const double lo = x.min().item<double>(), hi = x.max().item<double>();
    const double range = hi - lo > 1e-6 ? hi - lo : 1.0;
    x = (x - lo) / range;
    const double contrast = 0.85 + 0.3 * unit(rng);
    const double brightness = -0.15 + 0.3 * unit(rng);
    const bool blur = unit(rng) < 0.5;
    const double sigma = 0.05 * unit(rng);
    x = (x - x.mean()) * contrast + x.mean() + brightness;
    if (blur) {
      // A 3×3 blur is meant for images of about 128² [ours]: on smaller ones it smears whole
      // structures (at 32² it stopped training altogether), so its strength scales with the
      // size: the blurred image is mixed in with weight min(1, H/128).
      const int64_t c = x.size(0);
      const torch::Tensor blurred =
          torch::nn::functional::conv2d(
              torch::replication_pad2d(x.unsqueeze(0), {1, 1, 1, 1}),
              blur_kernel.expand({c, 1, 3, 3}).contiguous(),
              torch::nn::functional::Conv2dFuncOptions().groups(c))
              .squeeze(0);
      const double strength = std::min(1.0, static_cast<double>(x.size(1)) / 128.0);
      x = (1 - strength) * x + strength * blurred;
    }
    x = x + sigma * torch::randn(x.sizes(), noise, x.options());
    // Sites feed the model per-image standardised intensities: give the perturbed image the
    // original's mean and spread, so it stays in the distribution the model (and its
    // BatchNorm statistics) sees. What remains of T is then mostly blur and noise.
    const torch::Tensor original = images[i];
    x = (x - x.mean()) / x.std().clamp_min(1e-6) * original.std() + original.mean();
    out.push_back(x);
  }
  return torch::stack(out);
}

CoLearningObjective::CoLearningObjective(const CoLearningRound& round,
                                         const TeacherOutputs& teacher,
                                         const SegmentationSet& set, torch::Tensor log_variances,
                                         const SegLossOptions& loss)
    : round_(round),
      teacher_probs_(teacher.probs),
      reliability_(PerImageReliability(teacher.labels, set.masks, set.num_classes)),
      loss_(loss),
      rng_(round.seed) {
  reliable_ = round.warming_up ? std::vector<bool>(set.size(), true)
                               : ReliableImages(teacher.losses, reliability_, round.threshold);
  std::vector<int64_t> flags(reliable_.begin(), reliable_.end());
  reliable_mask_ = torch::tensor(flags, torch::kLong).to(torch::kBool);
  log_variances_ = log_variances.detach().clone().to(torch::kFloat);
  log_variances_.set_requires_grad(round.learned_loss_weights);
}

double CoLearningObjective::site_reliability() const { return SiteReliability(reliable_); }

torch::Tensor CoLearningObjective::Inputs(const torch::Tensor&, const torch::Tensor& images) {
  perturbed_ = round_.consistency && round_.consistency_weight > 0;
  if (!perturbed_) return images;
  // One split pass for both: the clean batch and its perturbed copy, so the coordinator runs
  // one forward and one backward (the coordinator's budget counts both:
  // MethodOptions::TrainingViewsPerImage).
  return torch::cat({images, Perturb(images, rng_)});
}

torch::Tensor CoLearningObjective::Loss(const torch::Tensor& indices, const torch::Tensor& logits,
                                        const torch::Tensor& masks) {
  const int64_t n = indices.size(0);
  const torch::Tensor clean = logits.slice(0, 0, n);
  const torch::Tensor teacher = teacher_probs_.index_select(0, indices);
  const torch::Tensor reliable = reliable_mask_.index_select(0, indices);
  std::optional<torch::Tensor> rel, unrel, cons;
  if (reliable.any().item<bool>()) {
    const torch::Tensor pick = reliable.nonzero().squeeze(1);
    rel = SegmentationLoss(clean.index_select(0, pick), masks.index_select(0, pick), loss_);
  }
  if (round_.refinement != RefinementMode::kOff && !reliable.all().item<bool>()) {
    const torch::Tensor pick = (~reliable).nonzero().squeeze(1);
    const torch::Tensor student = torch::softmax(clean.index_select(0, pick), 1).detach();
    const torch::Tensor teacher_pick = teacher.index_select(0, pick);
    const torch::Tensor fused = FusedPrediction(teacher_pick, student);
    const torch::Tensor mask_pick = masks.index_select(0, pick);
    torch::Tensor target;
    if (round_.refinement == RefinementMode::kSoft) {
      std::vector<double> r;
      for (int64_t k = 0; k < pick.size(0); ++k)
        r.push_back(reliability_[indices[pick[k].item<int64_t>()].item<int64_t>()]);
      target = SoftRefinedTargets(mask_pick, fused, r);
    } else {
      target = HardRefinedTargets(mask_pick, fused, teacher_pick, round_.kappa);
    }
    unrel = SegmentationLoss(clean.index_select(0, pick), target, loss_);
  }
  if (perturbed_) {
    const torch::Tensor student = torch::softmax(logits.slice(0, n, 2 * n), 1);
    cons = round_.consistency_weight * (student - teacher).pow(2).sum(1).mean();
  }
  return WeightedLoss(log_variances_, {rel, unrel, cons});
}

std::vector<torch::Tensor> CoLearningObjective::parameters() {
  if (!round_.learned_loss_weights) return {};
  return {log_variances_};
}

void CoLearningObjective::AfterStep() {
  torch::NoGradGuard no_grad;
  log_variances_.clamp_(-kMaxLogVariance, kMaxLogVariance);
}

DistillationObjective::DistillationObjective(const TeacherOutputs& teacher, double weight,
                                             const SegLossOptions& loss)
    : teacher_probs_(teacher.probs), weight_(weight), loss_(loss) {}

torch::Tensor DistillationObjective::Inputs(const torch::Tensor&, const torch::Tensor& images) {
  return images;
}

torch::Tensor DistillationObjective::Loss(const torch::Tensor& indices,
                                          const torch::Tensor& logits,
                                          const torch::Tensor& masks) {
  const torch::Tensor teacher = teacher_probs_.index_select(0, indices);
  const torch::Tensor kl =
      (teacher * (teacher.clamp_min(1e-12).log() - torch::log_softmax(logits, 1))).sum(1).mean();
  return (1 - weight_) * SegmentationLoss(logits, masks, loss_) + weight_ * kl;
}

double BoundaryNoise(const torch::Tensor& teacher_labels, const torch::Tensor& masks,
                     int64_t band) {
  torch::NoGradGuard no_grad;
  // A pixel is on a boundary when a neighbour has another label; the band is every pixel
  // within `band` of one (a max-pool dilation of the boundary map).
  auto boundary = [](const torch::Tensor& labels) {
    const torch::Tensor f = labels.unsqueeze(1).to(torch::kFloat);
    const torch::Tensor hi = torch::max_pool2d(f, 3, 1, 1);
    const torch::Tensor lo = -torch::max_pool2d(-f, 3, 1, 1);
    return (hi != lo).to(torch::kFloat);
  };
  const torch::Tensor edges = torch::maximum(boundary(teacher_labels), boundary(masks));
  const int64_t k = 2 * band + 1;
  const torch::Tensor in_band = torch::max_pool2d(edges, k, 1, band).squeeze(1) > 0;
  const torch::Tensor differ = (teacher_labels != masks) & in_band;
  const torch::Tensor band_pixels = in_band.flatten(1).sum(1).to(torch::kDouble);
  const torch::Tensor differ_pixels = differ.flatten(1).sum(1).to(torch::kDouble);
  const torch::Tensor has_band = band_pixels > 0;
  if (!has_band.any().item<bool>()) return 0.0;
  return (differ_pixels.index({has_band}) / band_pixels.index({has_band})).mean().item<double>();
}

}  // namespace splitfed::colearning
