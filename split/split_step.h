// One training step across the cut, written so that only what would travel between a site
// and the coordinator crosses between the two halves: a1 (up), a2 (down), g2 (up), g1 (down).
// In-process, tensors are handed over directly; over the network the same calls run on either
// side of a stream, so the arithmetic is identical.
#pragma once

#include <torch/types.h>

#include <functional>
#include <vector>

#include "split/unet.h"

namespace splitfed {

// The site's half: front and back. Keeps the autograd state between the messages of one step.
class ClientStep {
 public:
  ClientStep(UNetSegment front, UNetSegment back);

  // Message 1: runs the front on the images; returns a1 to send (detached from the graph).
  torch::Tensor Forward(const torch::Tensor& images);

  struct BackResult {
    torch::Tensor g2;      // ∂L/∂a2, to send up
    torch::Tensor logits;  // detached, for metrics
    double loss = 0.0;
  };
  using LossFn = std::function<torch::Tensor(const torch::Tensor& logits)>;
  // Message 3: runs the back on a2 with the skips kept from Forward, computes the loss with the
  // site's own labels (inside `loss_fn`) and back-propagates to a2. Accumulates the back's
  // parameter gradients.
  BackResult Backward(const torch::Tensor& a2, const LossFn& loss_fn);

  // Message 5: back-propagates g1 (and the skip gradients from Backward) through the front.
  void FinishBackward(const torch::Tensor& g1);

 private:
  UNetSegment front_;
  UNetSegment back_;
  torch::Tensor a1_;                  // live front output
  SkipSet skips_;                     // live skips from the front
  std::vector<torch::Tensor> skip_grads_;
};

// The coordinator's half: one body. Keeps the autograd state between a1 and g2.
class ServerStep {
 public:
  explicit ServerStep(UNetSegment body);

  // Message 2: a2 = body(a1), detached for sending.
  torch::Tensor Forward(const torch::Tensor& a1);
  // Message 4: back-propagates g2 through the body (accumulating its gradients); returns g1.
  torch::Tensor Backward(const torch::Tensor& g2);

 private:
  UNetSegment body_;
  torch::Tensor a1_leaf_;
  torch::Tensor a2_;
};

// All four messages in one process; returns the client's loss and logits. The caller zeroes
// and steps the optimisers.
ClientStep::BackResult SplitTrainStep(ClientStep& client, ServerStep& server,
                                      const torch::Tensor& images,
                                      const ClientStep::LossFn& loss_fn);

// Forward only through front, body and back (evaluation; no autograd state kept).
torch::Tensor SplitInference(SplitModel& model, const torch::Tensor& images);

}  // namespace splitfed
