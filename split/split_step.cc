#include "split/split_step.h"

#include <torch/torch.h>

namespace splitfed {

ClientStep::ClientStep(UNetSegment front, UNetSegment back)
    : front_(std::move(front)), back_(std::move(back)) {}

torch::Tensor ClientStep::Forward(const torch::Tensor& images) {
  skips_.clear();
  skip_grads_.clear();
  a1_ = front_->forward(images, skips_);
  return a1_.detach();
}

ClientStep::BackResult ClientStep::Backward(const torch::Tensor& a2, const LossFn& loss_fn) {
  TORCH_CHECK(a1_.defined(), "ClientStep::Backward called before Forward");
  torch::Tensor a2_leaf = a2.detach().requires_grad_(true);
  // The back sees the front's skips as leaves, so the loss's backward stops at the cut and the
  // front is back-propagated once, in FinishBackward, with both gradients together.
  SkipSet skip_leaves(skips_.size());
  for (size_t level = 0; level < skips_.size(); ++level)
    if (skips_[level].defined()) skip_leaves[level] = skips_[level].detach().requires_grad_(true);
  torch::Tensor logits = back_->forward(a2_leaf, skip_leaves);
  torch::Tensor loss = loss_fn(logits);
  loss.backward();
  skip_grads_.assign(skips_.size(), torch::Tensor());
  for (size_t level = 0; level < skips_.size(); ++level)
    if (skip_leaves[level].defined()) skip_grads_[level] = skip_leaves[level].grad();
  return {a2_leaf.grad(), logits.detach(), loss.item<double>()};
}

void ClientStep::FinishBackward(const torch::Tensor& g1) {
  TORCH_CHECK(a1_.defined(), "ClientStep::FinishBackward called before Forward");
  std::vector<torch::Tensor> outputs = {a1_};
  std::vector<torch::Tensor> grads = {g1};
  for (size_t level = 0; level < skips_.size(); ++level) {
    if (!skips_[level].defined() || !skip_grads_[level].defined()) continue;
    outputs.push_back(skips_[level]);
    grads.push_back(skip_grads_[level]);
  }
  torch::autograd::backward(outputs, grads);
  a1_ = torch::Tensor();
  skips_.clear();
  skip_grads_.clear();
}

ServerStep::ServerStep(UNetSegment body) : body_(std::move(body)) {}

torch::Tensor ServerStep::Forward(const torch::Tensor& a1) {
  a1_leaf_ = a1.detach().requires_grad_(true);
  a2_ = body_->forward(a1_leaf_);
  return a2_.detach();
}

torch::Tensor ServerStep::Backward(const torch::Tensor& g2) {
  TORCH_CHECK(a2_.defined(), "ServerStep::Backward called before Forward");
  a2_.backward(g2);
  torch::Tensor g1 = a1_leaf_.grad();
  a1_leaf_ = torch::Tensor();
  a2_ = torch::Tensor();
  return g1;
}

ClientStep::BackResult SplitTrainStep(ClientStep& client, ServerStep& server,
                                      const torch::Tensor& images,
                                      const ClientStep::LossFn& loss_fn) {
  const torch::Tensor a1 = client.Forward(images);
  const torch::Tensor a2 = server.Forward(a1);
  ClientStep::BackResult result = client.Backward(a2, loss_fn);
  const torch::Tensor g1 = server.Backward(result.g2);
  client.FinishBackward(g1);
  return result;
}

torch::Tensor SplitInference(SplitModel& model, const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  SkipSet skips;
  torch::Tensor a1 = model.front->forward(images, skips);
  torch::Tensor a2 = model.body->forward(a1);
  return model.back->forward(a2, skips);
}

}  // namespace splitfed
