// Adam (Kingma & Ba, 2015, "Adam: A Method for Stochastic Optimization", Algorithm 1) over
// float32 tensors, each updated in one fused pass.
//
// It computes what torch::optim::Adam computes without weight decay or AMSGrad (the same
// bias corrections and ε placement, the same per-tensor step count), up to float rounding.
// LibTorch's version makes about eight passes over every tensor with a temporary or two; on
// the U-Net's body (1.9 M parameters) one fused pass is 4-5x faster, which matters because a
// training step waits for it (docs/PERFORMANCE.md, "The optimiser step").
#pragma once

#include <torch/types.h>

#include <vector>

namespace splitfed {

struct AdamOptions {
  double learning_rate = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double epsilon = 1e-8;
};

class Adam {
 public:
  // `parameters` must be float32 leaf tensors that require grad (checked: a clear error
  // otherwise). They are updated in place; the optimiser does not own them.
  Adam(std::vector<torch::Tensor> parameters, const AdamOptions& options);

  // Sets every defined gradient to zero (keeping it allocated, as LibTorch does).
  void ZeroGrad();
  // One update of every parameter that has a gradient; a parameter without one is left alone
  // and its step count does not advance.
  void Step();

  const AdamOptions& options() const { return options_; }

 private:
  struct State {
    torch::Tensor first_moment;   // m
    torch::Tensor second_moment;  // v
    int64_t steps = 0;
  };
  AdamOptions options_;
  std::vector<torch::Tensor> parameters_;
  std::vector<State> states_;
};

}  // namespace splitfed
