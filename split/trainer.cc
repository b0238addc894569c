#include "split/trainer.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <numeric>
#include <random>

#include "split/evaluate.h"
#include "status/status_macros.h"

namespace splitfed {

LocalBody::LocalBody(UNetSegment body, double learning_rate)
    : body_(std::move(body)),
      step_(body_),
      optimizer_(std::make_unique<Adam>(body_->parameters(), AdamOptions{learning_rate})) {}

LocalBody::~LocalBody() = default;

absl::StatusOr<torch::Tensor> LocalBody::Forward(const torch::Tensor& a1) {
  FinishStep();
  body_->train();
  return step_.Forward(a1);
}

absl::StatusOr<torch::Tensor> LocalBody::Backward(const torch::Tensor& g2) {
  absl::StatusOr<torch::Tensor> g1 = BackwardDeferringStep(g2);
  FinishStep();
  return g1;
}

absl::StatusOr<torch::Tensor> LocalBody::BackwardDeferringStep(const torch::Tensor& g2) {
  FinishStep();
  optimizer_->ZeroGrad();
  torch::Tensor g1 = step_.Backward(g2);
  step_pending_ = true;
  return g1;
}

void LocalBody::FinishStep() {
  if (!step_pending_) return;
  step_pending_ = false;
  optimizer_->Step();
}

absl::StatusOr<torch::Tensor> LocalBody::Evaluate(const torch::Tensor& a1) {
  FinishStep();
  torch::NoGradGuard no_grad;
  const bool was_training = body_->is_training();
  body_->eval();
  torch::Tensor a2 = body_->forward(a1);
  body_->train(was_training);
  return a2;
}

SiteTrainer::SiteTrainer(UNetSegment front, UNetSegment back, const TrainerOptions& options,
                         BatchObjective* objective)
    : front_(std::move(front)),
      back_(std::move(back)),
      options_(options),
      client_(front_, back_),
      objective_(objective) {
  std::vector<torch::Tensor> params = front_->parameters();
  for (const torch::Tensor& p : back_->parameters()) params.push_back(p);
  if (objective_)
    for (const torch::Tensor& p : objective_->parameters()) params.push_back(p);
  optimizer_ = std::make_unique<Adam>(params, AdamOptions{options.learning_rate});
}

SiteTrainer::~SiteTrainer() = default;

absl::StatusOr<EpochStats> SiteTrainer::TrainEpoch(const SegmentationSet& set,
                                                   uint64_t shuffle_seed, BodyLink& body) {
  const auto start = std::chrono::steady_clock::now();
  front_->train();
  back_->train();
  // The batch order comes from its own generator: torch's global one is shared by every
  // thread (sites and coordinator in one process), so seeding it here would race.
  std::vector<int64_t> shuffled(set.size());
  std::iota(shuffled.begin(), shuffled.end(), 0);
  std::mt19937_64 rng(shuffle_seed);
  std::shuffle(shuffled.begin(), shuffled.end(), rng);
  const torch::Tensor order = torch::tensor(shuffled, torch::kLong);
  EpochStats stats;
  double loss_sum = 0.0;
  for (int64_t begin = 0; begin < set.size(); begin += options_.batch_size) {
    const int64_t end = std::min(begin + options_.batch_size, set.size());
    if (end - begin < 2) break;
    const torch::Tensor idx = order.slice(0, begin, end);
    const torch::Tensor images = set.images.index_select(0, idx);
    const torch::Tensor masks = set.masks.index_select(0, idx);
    optimizer_->ZeroGrad();
    const torch::Tensor a1 = client_.Forward(objective_ ? objective_->Inputs(idx, images) : images);
    ASSIGN_OR_RETURN(torch::Tensor a2, body.Forward(a1));
    const ClientStep::BackResult back =
        client_.Backward(a2, [&](const torch::Tensor& logits) {
          return objective_ ? objective_->Loss(idx, logits, masks)
                            : SegmentationLoss(logits, masks, options_.loss);
        });
    ASSIGN_OR_RETURN(torch::Tensor g1, body.Backward(back.g2));
    client_.FinishBackward(g1);
    optimizer_->Step();
    if (objective_) objective_->AfterStep();
    loss_sum += back.loss * (end - begin);
    stats.images += end - begin;
  }
  stats.mean_loss = stats.images ? loss_sum / stats.images : 0.0;
  stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

absl::StatusOr<SiteTrainer::Evaluation> SiteTrainer::Evaluate(const SegmentationSet& set,
                                                               BodyLink& body,
                                                               int64_t batch_size) {
  torch::NoGradGuard no_grad;
  front_->eval();
  back_->eval();
  Evaluation result{ScoreAccumulator(set.num_classes), 0.0};
  for (int64_t start = 0; start < set.size(); start += batch_size) {
    const int64_t end = std::min(start + batch_size, set.size());
    SkipSet skips;
    const torch::Tensor a1 = front_->forward(set.images.slice(0, start, end), skips);
    ASSIGN_OR_RETURN(torch::Tensor a2, body.Evaluate(a1));
    const torch::Tensor logits = back_->forward(a2, skips);
    const torch::Tensor masks = set.masks.slice(0, start, end);
    ScoreBatch(logits.argmax(1), masks, result.scores);
    result.mean_loss +=
        SegmentationLoss(logits, masks, options_.loss).item<double>() * (end - start);
  }
  if (set.size() > 0) result.mean_loss /= set.size();
  front_->train();
  back_->train();
  return result;
}

}  // namespace splitfed
