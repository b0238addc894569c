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

struct SplitModel;

// Sorted by name, so every party iterates in the same order.
using NamedTensors = std::map<std::string, torch::Tensor>;

// Copies (detached, contiguous) of every parameter and buffer of `module`.
NamedTensors ExtractState(const torch::nn::Module& module);

// Writes `state` into `module`. The names must match exactly and each tensor must have the
// parameter's shape and dtype; otherwise nothing is written and the error names the offender.
absl::Status LoadState(torch::nn::Module& module, const NamedTensors& state);

// What travels between the coordinator and a site each round: the client parts' entries,
// named by part, and SplitFed-CL's learned loss weights (s_rel, s_unrel, s_cons) beside them.
inline constexpr char kFrontPrefix[] = "front.";
inline constexpr char kBodyPrefix[] = "body.";
inline constexpr char kBackPrefix[] = "back.";
inline constexpr char kLossLogVariances[] = "loss.log_variances";

// The front's and back's state, each name prefixed by its part.
NamedTensors ClientPartsState(const SplitModel& model);
// The whole model's: the front's, the body's and the back's, each prefixed by its part (what
// model files and resume files hold).
NamedTensors SplitModelState(const SplitModel& model);

// The prefixed entries of `state` sorted into the front's and the back's (prefix removed);
// other entries (the loss weights) belong to neither and are skipped.
void SplitClientPartsState(const NamedTensors& state, NamedTensors* front, NamedTensors* back);

// Loads the prefixed entries of `state` into the model's front and back (LoadState's checks).
absl::Status LoadClientParts(const NamedTensors& state, SplitModel& model);

}  // namespace splitfed
