// What a site computes each round for a method with a teacher (docs/ALGORITHM.md §3-4, §9-10):
// the teacher's predictions on its training images, SplitFed-CL's per-batch objective
// (reliable masks as they are, unreliable ones refined, consistency under perturbation,
// trainable loss weights), FedNoRo's distillation and FedA3I's boundary-noise statistic.
// Everything here stays at the site.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/statusor.h"
#include "colearning/method.h"
#include "datasets/segmentation_set.h"
#include "split/loss.h"
#include "split/trainer.h"
#include "split/unet.h"

namespace splitfed::colearning {

// The teacher on a site's images, computed once per round (the teacher does not change
// within a round).
struct TeacherOutputs {
  torch::Tensor probs;         // N×C×H×W softmax
  torch::Tensor labels;        // N×H×W argmax
  std::vector<double> losses;  // ℓ_i = L_seg(p_T(x_i), y_i)
};

// Runs the teacher's front and back here, in eval mode and without gradients, around its body
// on the coordinator (`link.Teacher`).
absl::StatusOr<TeacherOutputs> RunTeacher(UNetSegment front, UNetSegment back,
                                          const SegmentationSet& set, BodyLink& link,
                                          const SegLossOptions& loss = {},
                                          int64_t batch_size = 16);

// SplitFed-CL's round at one site: which images it trusts, and how it trains on a batch.
struct CoLearningRound {
  bool warming_up = false;           // every image reliable
  RefinementMode refinement = RefinementMode::kSoft;
  double kappa = 0.8;
  bool consistency = true;
  double consistency_weight = 1.0;   // w_c(t)
  bool learned_loss_weights = true;
  ThresholdOptions threshold;
  uint64_t seed = 0;                 // the perturbations' random stream
};

class CoLearningObjective : public BatchObjective {
 public:
  // `log_variances`: the round's starting s (3 values: reliable, unreliable, consistency).
  CoLearningObjective(const CoLearningRound& round, const TeacherOutputs& teacher,
                      const SegmentationSet& set, torch::Tensor log_variances,
                      const SegLossOptions& loss = {});

  torch::Tensor Inputs(const torch::Tensor& indices, const torch::Tensor& images) override;
  torch::Tensor Loss(const torch::Tensor& indices, const torch::Tensor& logits,
                     const torch::Tensor& masks) override;
  std::vector<torch::Tensor> parameters() override;
  void AfterStep() override;

  const std::vector<double>& reliability() const { return reliability_; }  // r_i
  const std::vector<bool>& reliable() const { return reliable_; }
  double site_reliability() const;                                         // q_k
  torch::Tensor log_variances() const { return log_variances_.detach().clone(); }

 private:
  CoLearningRound round_;
  torch::Tensor teacher_probs_;
  std::vector<double> reliability_;
  std::vector<bool> reliable_;
  torch::Tensor reliable_mask_;  // N bool
  torch::Tensor log_variances_;
  SegLossOptions loss_;
  std::mt19937_64 rng_;
  bool perturbed_ = false;  // the last Inputs() appended a perturbed copy
};

// The photometric perturbation T of §3.3, drawn per image from `rng` on the image's intensities
// rescaled to [0, 1]: contrast ×U(0.85, 1.15) about the mean, brightness ±0.15, a 3×3 blur
// with probability ½, Gaussian noise with σ ~ U(0, 0.05); then the image gets back its
// original mean and standard deviation [ours: inputs are standardised per image].
torch::Tensor Perturb(const torch::Tensor& images, std::mt19937_64& rng);

// FedNoRo's objective for a site flagged noisy [ours: reconstruction]:
// (1 − λ)·L_seg(p_S, y) + λ·KL(p_T ‖ p_S), averaged over pixels.
class DistillationObjective : public BatchObjective {
 public:
  DistillationObjective(const TeacherOutputs& teacher, double weight,
                        const SegLossOptions& loss = {});
  torch::Tensor Inputs(const torch::Tensor& indices, const torch::Tensor& images) override;
  torch::Tensor Loss(const torch::Tensor& indices, const torch::Tensor& logits,
                     const torch::Tensor& masks) override;

 private:
  torch::Tensor teacher_probs_;
  double weight_;
  SegLossOptions loss_;
};

// FedA3I's noise statistic [ours: reconstruction]: over the pixels within `band` pixels of the
// teacher's or the mask's class boundaries, the share where the mask's label differs from the
// teacher's, averaged over images that have such pixels (0 when none has).
double BoundaryNoise(const torch::Tensor& teacher_labels, const torch::Tensor& masks,
                     int64_t band);

}  // namespace splitfed::colearning
