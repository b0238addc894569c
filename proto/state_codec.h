// Model states (name → tensor) on the wire as StateChunk messages, one entry per message.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "proto/tensor_codec.h"
#include "splitfed/v1/federation.pb.h"

namespace splitfed {

// Weights always travel as fp32/int64, never fp16: rounding them would drift the model.
absl::Status EncodeStateEntry(const std::string& name, const torch::Tensor& tensor,
                              v1::StateChunk* out);
// Decodes one entry into `state`, refusing non-finite values and a repeated name.
absl::Status DecodeStateEntry(const v1::StateChunk& chunk,
                              std::map<std::string, torch::Tensor>* state);

// The explicit message-size limit both ends set (the largest weight tensor must fit).
constexpr int kMaxMessageBytes = 256 << 20;

}  // namespace splitfed
