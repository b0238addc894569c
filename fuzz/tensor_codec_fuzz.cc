// One tensor message as the server decodes it: the first byte picks the limits (expected
// dtype, non-finite refusal, a small element budget), the rest is a v1::Tensor.
#include <cstddef>
#include <cstdint>

#include "proto/tensor_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  splitfed::v1::Tensor message;
  if (!message.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  splitfed::DecodeLimits limits;
  const uint8_t flags = data[0];
  if (flags & 1) limits.expected_dtype = splitfed::v1::DTYPE_FLOAT32;
  if (flags & 2) limits.expected_dtype = splitfed::v1::DTYPE_INT64;
  limits.reject_non_finite = flags & 4;
  if (flags & 8) limits.max_elements = 64;
  if (flags & 16) limits.max_rank = 2;
  splitfed::Support support;
  (void)splitfed::DecodeTensor(message, limits, "fuzzed", &support);
  return 0;
}
