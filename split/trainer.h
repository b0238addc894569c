// A site's local split training, written against a BodyLink: the coordinator's body seen from
// the site. In one process the link is a LocalBody; over the network it is a gRPC stream.
// Either way the site runs the same code, so the arithmetic is the same.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "datasets/segmentation_set.h"
#include "metrics/segmentation_metrics.h"
#include "split/adam.h"
#include "split/loss.h"
#include "split/split_step.h"
#include "split/unet.h"

namespace splitfed {

// The body as the site sees it: a1 → a2, g2 → g1 (the body steps its own optimiser), and a
// forward-only pass for evaluation.
class BodyLink {
 public:
  virtual ~BodyLink() = default;
  virtual absl::StatusOr<torch::Tensor> Forward(const torch::Tensor& a1) = 0;
  virtual absl::StatusOr<torch::Tensor> Backward(const torch::Tensor& g2) = 0;
  virtual absl::StatusOr<torch::Tensor> Evaluate(const torch::Tensor& a1) = 0;
  // Forward-only a1 → a2 through the teacher's body (methods with a teacher).
  virtual absl::StatusOr<torch::Tensor> Teacher(const torch::Tensor& a1) {
    (void)a1;
    return absl::UnimplementedError("this body link has no teacher");
  }
};

// A body with its own Adam optimiser: the coordinator keeps one per site (SFLV1), and the
// in-process trainer uses one directly.
class LocalBody : public BodyLink {
 public:
  LocalBody(UNetSegment body, double learning_rate);
  ~LocalBody() override;
  absl::StatusOr<torch::Tensor> Forward(const torch::Tensor& a1) override;
  absl::StatusOr<torch::Tensor> Backward(const torch::Tensor& g2) override;
  absl::StatusOr<torch::Tensor> Evaluate(const torch::Tensor& a1) override;
  // Backward without the optimiser's step: g1 comes back at once and the step is left
  // pending, so that the coordinator can send g1 first and step while the site back-propagates
  // it. FinishStep() takes the pending step; Forward, Backward, Evaluate and body() take it
  // first too, so the arithmetic is the same as Backward's.
  absl::StatusOr<torch::Tensor> BackwardDeferringStep(const torch::Tensor& g2);
  void FinishStep();
  UNetSegment& body() {
    FinishStep();
    return body_;
  }

 private:
  UNetSegment body_;
  ServerStep step_;
  std::unique_ptr<Adam> optimizer_;
  bool step_pending_ = false;
};

// How a batch is trained when the plain loss on the site's own masks is not all (SplitFed-CL,
// FedNoRo's distillation). The trainer asks it which images to push through the split for a
// batch (the batch itself, or more, e.g. a perturbed copy) and for the loss of their logits.
class BatchObjective {
 public:
  virtual ~BatchObjective() = default;
  virtual torch::Tensor Inputs(const torch::Tensor& indices, const torch::Tensor& images) = 0;
  virtual torch::Tensor Loss(const torch::Tensor& indices, const torch::Tensor& logits,
                             const torch::Tensor& masks) = 0;
  // Trainable tensors beyond the front and back, stepped by the site's optimiser.
  virtual std::vector<torch::Tensor> parameters() { return {}; }
  virtual void AfterStep() {}
};

struct TrainerOptions {
  double learning_rate = 1e-3;
  int64_t batch_size = 8;
  SegLossOptions loss;
};

struct EpochStats {
  double mean_loss = 0.0;
  int64_t images = 0;
  double seconds = 0.0;
};

// The site's half: front and back with one Adam optimiser over both.
class SiteTrainer {
 public:
  // `objective` (optional, not owned, outlives the trainer) replaces the plain loss.
  SiteTrainer(UNetSegment front, UNetSegment back, const TrainerOptions& options,
              BatchObjective* objective = nullptr);
  ~SiteTrainer();

  // One pass over `set` in an order drawn from `shuffle_seed`; the last partial batch is kept
  // unless it has a single image (BatchNorm needs two). Stops at the first link error.
  absl::StatusOr<EpochStats> TrainEpoch(const SegmentationSet& set, uint64_t shuffle_seed,
                                        BodyLink& body);

  // Scores `set` in eval mode (front and back; the body side evaluates through the link):
  // per-class scores and the mean segmentation loss per image.
  struct Evaluation {
    ScoreAccumulator scores;
    double mean_loss = 0.0;
  };
  absl::StatusOr<Evaluation> Evaluate(const SegmentationSet& set, BodyLink& body,
                                      int64_t batch_size = 16);

  UNetSegment& front() { return front_; }
  UNetSegment& back() { return back_; }

 private:
  UNetSegment front_;
  UNetSegment back_;
  TrainerOptions options_;
  ClientStep client_;
  BatchObjective* objective_;
  std::unique_ptr<Adam> optimizer_;
};

}  // namespace splitfed
