// Converts torch tensors to and from splitfed.v1.Tensor, validating everything that arrives.
#pragma once

#include <torch/types.h>

#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "splitfed/v1/tensor.pb.h"

namespace splitfed {

enum class WireEncoding { kFp32, kFp16 };

// Float tensors are sent as fp32 or fp16; int64 tensors always as int64. Other dtypes are an
// error. The tensor may be non-contiguous; it is not modified.
absl::Status EncodeTensor(const torch::Tensor& tensor, WireEncoding encoding,
                          v1::Tensor* out);

struct DecodeLimits {
  int64_t max_rank = 8;
  int64_t max_elements = int64_t{1} << 28;  // 1 GiB of float32
  std::optional<std::vector<int64_t>> expected_shape;
  std::optional<v1::DType> expected_dtype;
  bool reject_non_finite = false;  // NaN or ±Inf anywhere is an error
};

// Each failure is its own error: unknown dtype or encoding, an encoding that does not fit the
// dtype, a bad rank or dimension, too many elements, a byte count that does not match the
// shape, a shape or dtype other than the expected one, non-finite values.
// `what` names the tensor in messages (e.g. "a1 of site hospital-a, round 3").
absl::StatusOr<torch::Tensor> DecodeTensor(const v1::Tensor& message, const DecodeLimits& limits,
                                           absl::string_view what = "tensor");

}  // namespace splitfed
