// A module's parameters and buffers by name: the unit that is checkpointed, sent and averaged.
#pragma once

#include <torch/types.h>

#include <map>
#include <string>

#include "absl/status/status.h"

namespace torch::nn {
class Module;
}

namespace splitfed {

// Sorted by name, so every party iterates in the same order.
using NamedTensors = std::map<std::string, torch::Tensor>;

// Copies (detached, contiguous) of every parameter and buffer of `module`.
NamedTensors ExtractState(const torch::nn::Module& module);

// Writes `state` into `module`. The names must match exactly and each tensor must have the
// parameter's shape and dtype; otherwise nothing is written and the error names the offender.
absl::Status LoadState(torch::nn::Module& module, const NamedTensors& state);

}  // namespace splitfed
