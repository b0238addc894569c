#include "proto/tensor_codec.h"

#include <torch/torch.h>

#include <cfloat>
#include <cmath>
#include <algorithm>
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

absl::Status NonFiniteError(absl::string_view what, const torch::Tensor& t) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": holds NaN or infinite values (",
                                                 torch::isnan(t).sum().item<int64_t>(), " NaN, ",
                                                 torch::isinf(t).sum().item<int64_t>(), " Inf)"));
}

// True if no element of the contiguous float tensor `t` is NaN or infinite.
bool AllFinite(const torch::Tensor& t) {
  const float* p = t.data_ptr<float>();
  const int64_t n = t.numel();
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) bad |= !(std::fabs(p[i]) <= FLT_MAX);  // NaN compares false
  return !bad;
}

int64_t MaskBytes(int64_t elements) { return (elements + 7) / 8; }

// The sparse layouts work a mask byte (8 elements) at a time, without a branch per element:
// a mask that follows a ReLU is as unpredictable as the activation's signs. For each of the
// 256 byte values, `count` is its set bits and `slot[j]` where element j goes among the
// byte's stored values: its rank among the set bits if bit j is set, else `count`, a scratch
// place the next byte's values overwrite.
struct ByteTable {
  uint8_t count[256];
  uint8_t slot[256][8];
  ByteTable() {
    for (int m = 0; m < 256; ++m) {
      count[m] = static_cast<uint8_t>(__builtin_popcount(m));
      int rank = 0;
      for (int j = 0; j < 8; ++j) slot[m][j] = static_cast<uint8_t>((m >> j) & 1 ? rank++ : count[m]);
    }
  }
};
const ByteTable& Table() {
  static const ByteTable table;
  return table;
}

// Extra elements a values buffer needs past its stored ones: the scratch slot of the last
// byte (Compact) and the harmless reads of unset bits (Expand).
constexpr int64_t kSlack = 8;

// Set bits of a mask. The bits past the last element must be zero (checked by the caller).
int64_t CountBits(const std::string& mask) {
  const ByteTable& table = Table();
  int64_t count = 0;
  for (unsigned char byte : mask) count += table.count[byte];
  return count;
}

// Calls visit(byte index, lanes) for each mask byte of n elements: 8 lanes for every full
// byte (a constant the compiler unrolls), then the rest.
template <typename Visit>
void ForEachMaskByte(int64_t n, Visit visit) {
  for (int64_t b = 0; b < n / 8; ++b) visit(b, 8);
  if (n % 8) visit(n / 8, static_cast<int>(n % 8));
}

// Appends the elements of `in` (one mask byte's `lanes`) whose bit in `m` is set to
// values[*k...], and advances *k past them. Writes every lane: unset ones go to the scratch
// slot, so `values` needs kSlack room past the stored elements.
inline void CompactByte(const float* in, unsigned m, int lanes, float* values, int64_t* k) {
  const ByteTable& table = Table();
  for (int j = 0; j < lanes; ++j) values[*k + table.slot[m][j]] = in[j];
  *k += table.count[m];
}

// The mask of x's non-zero elements (-0.0 counts as zero) and those elements, in order, in
// `values` (room for their count + kSlack). Returns their count.
int64_t MaskAndCompact(const float* x, int64_t n, uint8_t* mask, float* values) {
  int64_t k = 0;
  ForEachMaskByte(n, [&](int64_t b, int lanes) {
    const float* in = x + 8 * b;
    unsigned m = 0;
    for (int j = 0; j < lanes; ++j) m |= static_cast<unsigned>(in[j] != 0.0f) << j;
    mask[b] = static_cast<uint8_t>(m);
    CompactByte(in, m, lanes, values, &k);
  });
  return k;
}

// x's elements at the mask's set bits, in order, into `values` (room for them + kSlack).
void Compact(const float* x, int64_t n, const uint8_t* mask, float* values) {
  int64_t k = 0;
  ForEachMaskByte(n, [&](int64_t b, int lanes) {
    CompactByte(x + 8 * b, mask[b], lanes, values, &k);
  });
}

// The inverse: out[i] is the next stored value where the mask is set, +0.0 elsewhere.
// `values` needs kSlack readable elements past the stored ones.
void Expand(const float* values, int64_t n, const uint8_t* mask, float* out) {
  const ByteTable& table = Table();
  int64_t k = 0;
  ForEachMaskByte(n, [&](int64_t b, int lanes) {
    float* o = out + 8 * b;
    const uint8_t m = mask[b];
    for (int j = 0; j < lanes; ++j) {
      // Select by bits, not by a branch: the value where the bit is set, +0.0 elsewhere.
      uint32_t bits;
      std::memcpy(&bits, &values[k + table.slot[m][j]], 4);
      bits &= 0u - ((m >> j) & 1u);
      std::memcpy(&o[j], &bits, 4);
    }
    k += table.count[m];
  });
}

// Stores `count` gathered float32 values (the first `count` of `values`) in `encoding`.
void SetValues(const torch::Tensor& values, int64_t count, WireEncoding encoding,
               v1::Tensor* out) {
  if (encoding == WireEncoding::kFp16) {
    const torch::Tensor half = values.slice(0, 0, count).to(torch::kHalf);
    out->set_encoding(v1::ENCODING_FP16);
    out->set_data(half.data_ptr(), count * 2);
  } else {
    out->set_encoding(v1::ENCODING_FP32);
    out->set_data(values.data_ptr(), count * 4);
  }
}

// A float tensor, contiguous on the CPU, or an error naming the function.
absl::StatusOr<torch::Tensor> FloatInput(const torch::Tensor& tensor, const char* function) {
  if (!tensor.defined()) return absl::InvalidArgumentError("cannot encode an undefined tensor");
  if (tensor.scalar_type() != torch::kFloat)
    return absl::InvalidArgumentError(absl::StrCat(function, " takes float32, not ",
                                                   c10::toString(tensor.scalar_type())));
  return tensor.detach().to(torch::kCPU).contiguous();
}

}  // namespace

absl::Status EncodeRectified(const torch::Tensor& tensor, WireEncoding encoding,
                             v1::Tensor* out, Support* support) {
  absl::StatusOr<torch::Tensor> t = FloatInput(tensor, "EncodeRectified");
  if (!t.ok()) return t.status();
  const int64_t n = t->numel();
  const int64_t element_size = encoding == WireEncoding::kFp16 ? 2 : 4;
  *support = Support();
  if (n == 0) return EncodeTensor(*t, encoding, out);
  std::string mask(MaskBytes(n), '\0');
  torch::Tensor values = torch::empty({n + kSlack}, torch::kFloat);
  const int64_t count = MaskAndCompact(t->data_ptr<float>(), n,
                                       reinterpret_cast<uint8_t*>(mask.data()),
                                       values.data_ptr<float>());
  if (count * element_size + MaskBytes(n) >= n * element_size)
    return EncodeTensor(*t, encoding, out);  // too few zeros to pay for the mask
  out->Clear();
  for (int64_t d : t->sizes()) out->add_shape(d);
  out->set_dtype(v1::DTYPE_FLOAT32);
  out->set_layout(v1::LAYOUT_NONZERO);
  SetValues(values, count, encoding, out);
  support->elements = n;
  support->count = count;
  support->mask = mask;
  out->set_mask(std::move(mask));
  return absl::OkStatus();
}

absl::Status EncodeOnSupport(const torch::Tensor& gradient, const Support& support,
                             WireEncoding encoding, v1::Tensor* out) {
  absl::StatusOr<torch::Tensor> g = FloatInput(gradient, "EncodeOnSupport");
  if (!g.ok()) return g.status();
  if (support.empty())
    return absl::FailedPreconditionError("a gradient on a support needs a non-empty support");
  if (g->numel() != support.elements)
    return absl::InvalidArgumentError(absl::StrCat("the gradient has ", g->numel(),
                                                   " elements, its activation's support ",
                                                   support.elements));
  out->Clear();
  for (int64_t d : g->sizes()) out->add_shape(d);
  out->set_dtype(v1::DTYPE_FLOAT32);
  out->set_layout(v1::LAYOUT_ON_SUPPORT);
  torch::Tensor values = torch::empty({support.count + kSlack}, torch::kFloat);
  Compact(g->data_ptr<float>(), support.elements,
          reinterpret_cast<const uint8_t*>(support.mask.data()), values.data_ptr<float>());
  SetValues(values, support.count, encoding, out);
  return absl::OkStatus();
}

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
                                           absl::string_view what, Support* received_support) {
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

  // 3. the layout: which elements the bytes hold, and exactly as many bytes as that says.
  if (received_support) *received_support = Support();
  const std::string* mask = nullptr;  // the elements `data` holds; null: all of them
  int64_t stored = elements;
  switch (m.layout()) {
    case v1::LAYOUT_DENSE:
      if (!m.mask().empty())
        return absl::InvalidArgumentError(absl::StrCat(what, ": a mask with LAYOUT_DENSE"));
      break;
    case v1::LAYOUT_NONZERO: {
      if (m.mask().size() != static_cast<size_t>(MaskBytes(elements)))
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": a mask of ", m.mask().size(), " bytes, but shape ",
                         ShapeText(shape), " needs ", MaskBytes(elements)));
      if (elements % 8 != 0 &&
          (static_cast<unsigned char>(m.mask().back()) >> (elements % 8)) != 0)
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": the mask has bits set past the last element"));
      mask = &m.mask();
      stored = CountBits(m.mask());
      break;
    }
    case v1::LAYOUT_ON_SUPPORT:
      if (!m.mask().empty())
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": a mask with LAYOUT_ON_SUPPORT (the support is the activation's)"));
      if (!limits.support || limits.support->empty())
        return absl::InvalidArgumentError(absl::StrCat(
            what, ": LAYOUT_ON_SUPPORT, but no activation crossed with LAYOUT_NONZERO in this "
                  "step to give the support"));
      if (limits.support->elements != elements)
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": shape ", ShapeText(shape), " has ", elements,
                         " elements, its activation's support ", limits.support->elements));
      mask = &limits.support->mask;
      stored = limits.support->count;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": unknown layout ", static_cast<int>(m.layout())));
  }
  if (mask && wire_type == torch::kLong)
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": layout ", v1::Layout_Name(m.layout()), " is for float tensors"));
  const int64_t expected_bytes = stored * element_size;
  if (static_cast<int64_t>(m.data().size()) != expected_bytes)
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": ", m.data().size(), " data bytes, but ",
        mask ? absl::StrCat(stored, " stored elements (", v1::Layout_Name(m.layout()), ")")
             : absl::StrCat("shape ", ShapeText(shape)),
        " in ", v1::Encoding_Name(m.encoding()), " needs ", expected_bytes));

  torch::Tensor t;
  if (mask) {
    // The stored values, widened to float32, with room to read past the last one.
    torch::Tensor values = torch::empty({stored + kSlack}, torch::kFloat);
    torch::Tensor stored_values = values.slice(0, 0, stored);
    if (wire_type == torch::kHalf) {
      torch::Tensor half = torch::empty({stored}, torch::kHalf);
      if (expected_bytes > 0) std::memcpy(half.data_ptr(), m.data().data(), expected_bytes);
      stored_values.copy_(half);
    } else if (expected_bytes > 0) {
      std::memcpy(values.data_ptr(), m.data().data(), expected_bytes);
    }
    // Zeros are finite: checking the stored values checks the tensor.
    if (limits.reject_non_finite && !AllFinite(stored_values))
      return NonFiniteError(what, stored_values);
    t = torch::empty(shape, torch::kFloat);
    Expand(values.data_ptr<float>(), elements, reinterpret_cast<const uint8_t*>(mask->data()),
           t.data_ptr<float>());
    if (received_support && m.layout() == v1::LAYOUT_NONZERO)
      *received_support = Support{m.mask(), elements, stored};
    return t;
  }
  t = torch::empty(shape, torch::TensorOptions().dtype(wire_type));
  if (expected_bytes > 0) std::memcpy(t.data_ptr(), m.data().data(), expected_bytes);
  if (wire_type == torch::kHalf) t = t.to(torch::kFloat);

  // 4. optionally, every value finite. A plain loop over the floats: torch::isfinite(t).all()
  // builds a bool tensor first and took 3x as long on a 2 MiB activation, twice per exchange.
  if (limits.reject_non_finite && t.scalar_type() == torch::kFloat && !AllFinite(t))
    return NonFiniteError(what, t);
  return t;
}

absl::Status SplitStepCodec::EncodeActivation(const torch::Tensor& activation,
                                              WireEncoding encoding, bool training,
                                              v1::Tensor* out) {
  Support sent;
  const absl::Status encoded = sends_rectified_
                                   ? EncodeRectified(activation, encoding, out, &sent)
                                   : EncodeTensor(activation, encoding, out);
  sent_ = training ? std::move(sent) : Support();
  return encoded;
}

absl::StatusOr<torch::Tensor> SplitStepCodec::DecodeActivation(const v1::Tensor& message,
                                                               const DecodeLimits& limits,
                                                               absl::string_view what,
                                                               bool training) {
  Support received;
  absl::StatusOr<torch::Tensor> t = DecodeTensor(message, limits, what, &received);
  received_ = training ? std::move(received) : Support();
  return t;
}

absl::Status SplitStepCodec::EncodeGradient(const torch::Tensor& gradient, WireEncoding encoding,
                                            v1::Tensor* out) {
  const Support support = std::move(received_);
  received_ = Support();
  return support.empty() ? EncodeTensor(gradient, encoding, out)
                         : EncodeOnSupport(gradient, support, encoding, out);
}

absl::StatusOr<torch::Tensor> SplitStepCodec::DecodeGradient(const v1::Tensor& message,
                                                             DecodeLimits limits,
                                                             absl::string_view what) {
  const Support support = std::move(sent_);
  sent_ = Support();
  limits.support = &support;
  return DecodeTensor(message, limits, what);
}

}  // namespace splitfed
