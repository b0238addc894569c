// Converts torch tensors to and from splitfed.v1.Tensor, validating everything that arrives.
#pragma once

#include <torch/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "splitfed/v1/tensor.pb.h"

namespace splitfed {

enum class WireEncoding { kFp32, kFp16 };

// The one mapping of an encoding to its wire value and to its name in configs ("fp32",
// "fp16"); an unknown wire value reads as fp32, the default.
v1::Encoding ToWire(WireEncoding encoding);
WireEncoding FromWire(v1::Encoding encoding);
const char* WireEncodingName(WireEncoding encoding);
absl::StatusOr<WireEncoding> ParseWireEncoding(const std::string& name);

// Which elements of an activation are non-zero, as both ends of a split step know it once the
// activation crossed with LAYOUT_NONZERO: the wire's bit mask (tensor.proto) and its count of
// set bits. Empty (no elements) when no such activation crossed.
struct Support {
  std::string mask;
  int64_t elements = 0;  // product of the activation's shape
  int64_t count = 0;     // set bits: the elements a gradient on this support carries
  bool empty() const { return elements == 0; }
};

// Float tensors are sent as fp32 or fp16; int64 tensors always as int64. Other dtypes are an
// error. The tensor may be non-contiguous; it is not modified. LAYOUT_DENSE.
absl::Status EncodeTensor(const torch::Tensor& tensor, WireEncoding encoding,
                          v1::Tensor* out);

// An activation that leaves its side of the cut through a ReLU (split/unet.h, OutputIsRectified):
// LAYOUT_NONZERO when that is smaller than dense, and then `support` is its mask, for the
// gradient that answers it; LAYOUT_DENSE otherwise, and `support` is emptied. Float only.
// The mask comes from the float32 values: an element too small for fp16 still counts as
// non-zero (it is sent, as 0), so both ends agree on the support whatever the encoding.
absl::Status EncodeRectified(const torch::Tensor& tensor, WireEncoding encoding,
                             v1::Tensor* out, Support* support);

// The gradient of an activation that crossed with `support` (non-empty): LAYOUT_ON_SUPPORT,
// only the elements where the activation is non-zero. Its shape must be the activation's.
// Exact when the activation's producer back-propagates through the ReLU it came out of: the
// gradient of every other element is zero there anyway.
absl::Status EncodeOnSupport(const torch::Tensor& gradient, const Support& support,
                             WireEncoding encoding, v1::Tensor* out);

struct DecodeLimits {
  int64_t max_rank = 8;
  int64_t max_elements = int64_t{1} << 28;  // 1 GiB of float32
  std::optional<std::vector<int64_t>> expected_shape;
  std::optional<v1::DType> expected_dtype;
  bool reject_non_finite = false;  // NaN or ±Inf anywhere is an error
  // What LAYOUT_ON_SUPPORT refers to: the support of the activation this tensor is the
  // gradient of. Without one (null or empty) that layout is an error.
  const Support* support = nullptr;
};

// Each failure is its own error: unknown dtype or encoding, an encoding that does not fit the
// dtype, a bad rank or dimension, too many elements, a byte count that does not match the
// shape, a shape or dtype other than the expected one, non-finite values.
// `what` names the tensor in messages (e.g. "a1 of site hospital-a, round 3"). Sparse layouts
// are checked as strictly: mask length and padding, data length against the set bits, a
// gradient's shape against its support. `received_support`, if given, is set to the mask of a
// LAYOUT_NONZERO tensor and emptied for the other layouts.
absl::StatusOr<torch::Tensor> DecodeTensor(const v1::Tensor& message, const DecodeLimits& limits,
                                           absl::string_view what = "tensor",
                                           Support* received_support = nullptr);

// One end of a Split stream's training steps, for the sparse layouts: the site (it sends a1,
// receives a2) or the coordinator (receives a1, sends a2). The activation this end sends goes
// through EncodeRectified when its part of the network ends in a ReLU (`sends_rectified`,
// OutputIsRectified in split/unet.h), otherwise dense. A gradient goes on the support of the
// activation it answers, if that crossed sparse. The supports are kept from a training
// step's activations (`training`: a gradient will follow) to its gradients, and each is
// forgotten once its gradient has crossed, or when a forward-only activation replaces it.
class SplitStepCodec {
 public:
  explicit SplitStepCodec(bool sends_rectified) : sends_rectified_(sends_rectified) {}

  absl::Status EncodeActivation(const torch::Tensor& activation, WireEncoding encoding,
                                bool training, v1::Tensor* out);
  absl::StatusOr<torch::Tensor> DecodeActivation(const v1::Tensor& message,
                                                 const DecodeLimits& limits,
                                                 absl::string_view what, bool training);
  // The gradient of the activation this end received.
  absl::Status EncodeGradient(const torch::Tensor& gradient, WireEncoding encoding,
                              v1::Tensor* out);
  // The gradient of the activation this end sent (`limits.support` is set here).
  absl::StatusOr<torch::Tensor> DecodeGradient(const v1::Tensor& message, DecodeLimits limits,
                                               absl::string_view what);

 private:
  bool sends_rectified_;
  Support sent_, received_;
};

}  // namespace splitfed
