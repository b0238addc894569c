#include "split/trainer.h"

#include <torch/torch.h>

#include <chrono>

namespace splitfed {

SplitTrainer::SplitTrainer(SplitModel model, const TrainerOptions& options)
    : model_(std::move(model)),
      options_(options),
      client_(model_.front, model_.back),
      server_(model_.body) {
  std::vector<torch::Tensor> client_params = model_.front->parameters();
  for (const torch::Tensor& p : model_.back->parameters()) client_params.push_back(p);
  client_optimizer_ = std::make_unique<torch::optim::Adam>(
      client_params, torch::optim::AdamOptions(options.learning_rate));
  server_optimizer_ = std::make_unique<torch::optim::Adam>(
      model_.body->parameters(), torch::optim::AdamOptions(options.learning_rate));
}

SplitTrainer::~SplitTrainer() = default;

EpochStats SplitTrainer::TrainEpoch(const SegmentationSet& set, uint64_t shuffle_seed) {
  const auto start = std::chrono::steady_clock::now();
  model_.front->train();
  model_.body->train();
  model_.back->train();
  torch::manual_seed(shuffle_seed);
  const torch::Tensor order = torch::randperm(set.size(), torch::kLong);
  EpochStats stats;
  double loss_sum = 0.0;
  for (int64_t begin = 0; begin < set.size(); begin += options_.batch_size) {
    const int64_t end = std::min(begin + options_.batch_size, set.size());
    if (end - begin < 2) break;
    const torch::Tensor idx = order.slice(0, begin, end);
    const torch::Tensor images = set.images.index_select(0, idx);
    const torch::Tensor masks = set.masks.index_select(0, idx);
    client_optimizer_->zero_grad();
    server_optimizer_->zero_grad();
    const auto result = SplitTrainStep(client_, server_, images, [&](const torch::Tensor& logits) {
      return SegmentationLoss(logits, masks, options_.loss);
    });
    server_optimizer_->step();
    client_optimizer_->step();
    loss_sum += result.loss * (end - begin);
    stats.images += end - begin;
  }
  stats.mean_loss = stats.images ? loss_sum / stats.images : 0.0;
  stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

}  // namespace splitfed
