#include "proto/tensor_codec.h"

#include <torch/torch.h>

#include <cfloat>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace splitfed {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the wire format is little-endian; a big-endian host needs byte swapping");

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// True if no element of the contiguous float tensor `t` is NaN or infinite.
bool AllFinite(const torch::Tensor& t) {
  const float* p = t.data_ptr<float>();
  const int64_t n = t.numel();
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) bad |= !(std::fabs(p[i]) <= FLT_MAX);  // NaN compares false
  return !bad;
}

}  // namespace

absl::Status EncodeTensor(const torch::Tensor& tensor, WireEncoding encoding, v1::Tensor* out) {
  if (!tensor.defined()) return absl::InvalidArgumentError("cannot encode an undefined tensor");
  torch::Tensor t = tensor.detach().to(torch::kCPU);
  out->Clear();
  for (int64_t d : t.sizes()) out->add_shape(d);
  switch (t.scalar_type()) {
    case torch::kFloat:
      out->set_dtype(v1::DTYPE_FLOAT32);
      if (encoding == WireEncoding::kFp16) {
        out->set_encoding(v1::ENCODING_FP16);
        t = t.to(torch::kHalf);
      } else {
        out->set_encoding(v1::ENCODING_FP32);
      }
      break;
    case torch::kLong:
      out->set_dtype(v1::DTYPE_INT64);
      out->set_encoding(v1::ENCODING_INT64);
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("cannot encode a tensor of dtype ", c10::toString(t.scalar_type()),
                       ": the wire carries float32 and int64"));
  }
  t = t.contiguous();
  out->set_data(t.data_ptr(), t.numel() * t.element_size());
  return absl::OkStatus();
}

absl::StatusOr<torch::Tensor> DecodeTensor(const v1::Tensor& m, const DecodeLimits& limits,
                                           absl::string_view what) {
  // 1. dtype and encoding must be known and fit together.
  int64_t element_size = 0;
  torch::ScalarType wire_type;
  switch (m.dtype()) {
    case v1::DTYPE_FLOAT32:
      if (m.encoding() == v1::ENCODING_FP32) {
        element_size = 4, wire_type = torch::kFloat;
      } else if (m.encoding() == v1::ENCODING_FP16) {
        element_size = 2, wire_type = torch::kHalf;
      }
      break;
    case v1::DTYPE_INT64:
      if (m.encoding() == v1::ENCODING_INT64) element_size = 8, wire_type = torch::kLong;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": unknown dtype ", static_cast<int>(m.dtype())));
  }
  if (element_size == 0) {
    if (!v1::Encoding_IsValid(m.encoding()) || m.encoding() == v1::ENCODING_UNSPECIFIED)
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": unknown encoding ", static_cast<int>(m.encoding())));
    return absl::InvalidArgumentError(absl::StrCat(what, ": encoding ",
                                                   v1::Encoding_Name(m.encoding()),
                                                   " cannot carry dtype ", v1::DType_Name(m.dtype())));
  }
  if (limits.expected_dtype && m.dtype() != *limits.expected_dtype)
    return absl::InvalidArgumentError(absl::StrCat(what, ": dtype ", v1::DType_Name(m.dtype()),
                                                   ", expected ",
                                                   v1::DType_Name(*limits.expected_dtype)));

  // 2. shape within limits, element count without overflow.
  std::vector<int64_t> shape(m.shape().begin(), m.shape().end());
  if (static_cast<int64_t>(shape.size()) > limits.max_rank)
    return absl::InvalidArgumentError(absl::StrCat(what, ": rank ", shape.size(),
                                                   " exceeds the limit of ", limits.max_rank));
  int64_t elements = 1;
  for (int64_t d : shape) {
    if (d < 0)
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": negative dimension in shape ", ShapeText(shape)));
    if (d > 0 && elements > limits.max_elements / d)
      return absl::InvalidArgumentError(absl::StrCat(what, ": shape ", ShapeText(shape),
                                                     " exceeds the limit of ",
                                                     limits.max_elements, " elements"));
    elements *= d;
  }
  if (limits.expected_shape && shape != *limits.expected_shape)
    return absl::InvalidArgumentError(absl::StrCat(what, ": shape ", ShapeText(shape),
                                                   ", expected ",
                                                   ShapeText(*limits.expected_shape)));

  // 3. the bytes must be exactly what the shape says.
  const int64_t expected_bytes = elements * element_size;
  if (static_cast<int64_t>(m.data().size()) != expected_bytes)
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", m.data().size(), " data bytes, but shape ", ShapeText(shape),
                     " in ", v1::Encoding_Name(m.encoding()), " needs ", expected_bytes));

  torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(wire_type));
  if (expected_bytes > 0) std::memcpy(t.data_ptr(), m.data().data(), expected_bytes);
  if (wire_type == torch::kHalf) t = t.to(torch::kFloat);

  // 4. optionally, every value finite. A plain loop over the floats: torch::isfinite(t).all()
  // builds a bool tensor first and took 3x as long on a 2 MiB activation, twice per exchange.
  if (limits.reject_non_finite && t.scalar_type() == torch::kFloat && !AllFinite(t))
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": holds NaN or infinite values (",
                     torch::isnan(t).sum().item<int64_t>(), " NaN, ",
                     torch::isinf(t).sum().item<int64_t>(), " Inf)"));
  return t;
}

}  // namespace splitfed
