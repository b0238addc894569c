#include "proto/state_codec.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "status/status_macros.h"

namespace splitfed {

absl::Status EncodeStateEntry(const std::string& name, const torch::Tensor& tensor,
                              v1::StateChunk* out) {
  out->set_name(name);
  return EncodeTensor(tensor, WireEncoding::kFp32, out->mutable_tensor());
}

absl::Status DecodeStateEntry(const v1::StateChunk& chunk,
                              std::map<std::string, torch::Tensor>* state) {
  if (chunk.name().empty()) return absl::InvalidArgumentError("state entry without a name");
  if (state->count(chunk.name()))
    return absl::InvalidArgumentError(absl::StrCat("state entry '", chunk.name(), "' sent twice"));
  DecodeLimits limits;
  limits.reject_non_finite = true;
  ASSIGN_OR_RETURN(torch::Tensor t, DecodeTensor(chunk.tensor(), limits,
                                                 absl::StrCat("weights '", chunk.name(), "'")));
  (*state)[chunk.name()] = t;
  return absl::OkStatus();
}

}  // namespace splitfed
