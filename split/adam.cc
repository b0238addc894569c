#include "split/adam.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <string>

namespace splitfed {
namespace {

// Elements per task of at::parallel_for: below this a tensor is updated on one thread.
constexpr int64_t kGrain = 32768;

}  // namespace

Adam::Adam(std::vector<torch::Tensor> parameters, const AdamOptions& options)
    : options_(options), parameters_(std::move(parameters)) {
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const torch::Tensor& p = parameters_[i];
    TORCH_CHECK(p.defined() && p.scalar_type() == torch::kFloat && p.is_contiguous() &&
                    p.device().is_cpu(),
                "Adam: parameter ", i, " must be a contiguous float32 CPU tensor");
    TORCH_CHECK(p.requires_grad(), "Adam: parameter ", i, " does not require grad");
  }
  states_.resize(parameters_.size());
}

void Adam::ZeroGrad() {
  for (torch::Tensor& p : parameters_) {
    torch::Tensor& grad = p.mutable_grad();
    if (!grad.defined()) continue;
    grad.detach_();
    grad.zero_();
  }
}

void Adam::Step() {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    torch::Tensor& p = parameters_[i];
    if (!p.grad().defined()) continue;
    const torch::Tensor grad = p.grad().contiguous();
    TORCH_CHECK(grad.scalar_type() == torch::kFloat && grad.numel() == p.numel(),
                "Adam: the gradient of parameter ", i, " is not float32 of its size");
    State& s = states_[i];
    if (s.steps == 0) {
      s.first_moment = torch::zeros_like(p);
      s.second_moment = torch::zeros_like(p);
    }
    ++s.steps;
    // Bias corrections in double, as LibTorch computes them; the elementwise work in float.
    const double correction1 = 1 - std::pow(options_.beta1, static_cast<double>(s.steps));
    const double correction2 = 1 - std::pow(options_.beta2, static_cast<double>(s.steps));
    const float beta1 = static_cast<float>(options_.beta1);
    const float beta2 = static_cast<float>(options_.beta2);
    const float one_minus_beta1 = static_cast<float>(1 - options_.beta1);
    const float one_minus_beta2 = static_cast<float>(1 - options_.beta2);
    const float step_size = static_cast<float>(options_.learning_rate / correction1);
    const float inverse_sqrt_correction2 = static_cast<float>(1 / std::sqrt(correction2));
    const float epsilon = static_cast<float>(options_.epsilon);
    float* param = p.data_ptr<float>();
    const float* g = grad.data_ptr<float>();
    float* m = s.first_moment.data_ptr<float>();
    float* v = s.second_moment.data_ptr<float>();
    // This file is built with -fno-math-errno so that std::sqrt vectorises.
    at::parallel_for(0, p.numel(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        const float mj = beta1 * m[j] + one_minus_beta1 * g[j];
        const float vj = beta2 * v[j] + one_minus_beta2 * g[j] * g[j];
        m[j] = mj;
        v[j] = vj;
        param[j] -= step_size * mj / (std::sqrt(vj) * inverse_sqrt_correction2 + epsilon);
      }
    });
  }
}

}  // namespace splitfed
