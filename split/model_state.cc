#include "split/model_state.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "split/unet.h"
#include "status/status_macros.h"

namespace splitfed {

NamedTensors ExtractState(const torch::nn::Module& module) {
  NamedTensors state;
  for (const auto& p : module.named_parameters()) state[p.key()] = p.value().detach().clone();
  for (const auto& b : module.named_buffers()) state[b.key()] = b.value().detach().clone();
  return state;
}

absl::Status LoadState(torch::nn::Module& module, const NamedTensors& state) {
  std::map<std::string, torch::Tensor> targets;
  for (auto& p : module.named_parameters()) targets[p.key()] = p.value();
  for (auto& b : module.named_buffers()) targets[b.key()] = b.value();
  for (const auto& [name, target] : targets) {
    auto it = state.find(name);
    if (it == state.end())
      return absl::InvalidArgumentError(absl::StrCat("model state lacks '", name, "'"));
    const torch::Tensor& value = it->second;
    if (!value.defined() || value.sizes() != target.sizes() ||
        value.scalar_type() != target.scalar_type())
      return absl::InvalidArgumentError(absl::StrCat(
          "model state '", name, "' has shape ", c10::str(value.sizes()), " ",
          value.defined() ? c10::toString(value.scalar_type()) : "undefined", ", expected ",
          c10::str(target.sizes()), " ", c10::toString(target.scalar_type())));
  }
  for (const auto& [name, value] : state)
    if (!targets.count(name))
      return absl::InvalidArgumentError(absl::StrCat("model state has unknown entry '", name,
                                                      "'"));
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) target.copy_(state.at(name));
  return absl::OkStatus();
}

NamedTensors ClientPartsState(const SplitModel& model) {
  NamedTensors out;
  for (auto& [name, t] : ExtractState(*model.front)) out[kFrontPrefix + name] = t;
  for (auto& [name, t] : ExtractState(*model.back)) out[kBackPrefix + name] = t;
  return out;
}

NamedTensors SplitModelState(const SplitModel& model) {
  NamedTensors out = ClientPartsState(model);
  for (auto& [name, t] : ExtractState(*model.body)) out[kBodyPrefix + name] = t;
  return out;
}

void SplitClientPartsState(const NamedTensors& state, NamedTensors* front, NamedTensors* back) {
  for (const auto& [name, t] : state) {
    if (absl::StartsWith(name, kFrontPrefix)) (*front)[name.substr(sizeof(kFrontPrefix) - 1)] = t;
    if (absl::StartsWith(name, kBackPrefix)) (*back)[name.substr(sizeof(kBackPrefix) - 1)] = t;
  }
}

absl::Status LoadClientParts(const NamedTensors& state, SplitModel& model) {
  NamedTensors front, back;
  SplitClientPartsState(state, &front, &back);
  RETURN_IF_ERROR(LoadState(*model.front, front));
  return LoadState(*model.back, back);
}

}  // namespace splitfed
