// The tensor codec: exact fp32 round trips, fp16 within its precision, every malformed message
// rejected with its own error.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "proto/sparse_kernels.h"
#include "proto/tensor_codec.h"
#include "tests/refusal.h"

namespace splitfed {
namespace {

using test_refusal::Refused;

v1::Tensor Encoded(const torch::Tensor& t, WireEncoding e = WireEncoding::kFp32) {
  v1::Tensor m;
  EXPECT_TRUE(EncodeTensor(t, e, &m).ok());
  return m;
}

void ExpectRejected(const v1::Tensor& m, const DecodeLimits& limits, const std::string& needle) {
  const absl::StatusOr<torch::Tensor> t = DecodeTensor(m, limits, "a1");
  ASSERT_FALSE(t.ok()) << "expected an error mentioning '" << needle << "'";
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find(needle), std::string::npos) << t.status();
  EXPECT_EQ(t.status().message().rfind("a1:", 0), 0u) << "the error names the tensor";
}

TEST(TensorCodec, Fp32RoundTripIsExact) {
  torch::manual_seed(3);
  const torch::Tensor t = torch::randn({2, 3, 5, 7}) * 1e3;
  const v1::Tensor m = Encoded(t);
  EXPECT_EQ(m.dtype(), v1::DTYPE_FLOAT32);
  EXPECT_EQ(m.encoding(), v1::ENCODING_FP32);
  EXPECT_EQ(m.data().size(), 2u * 3 * 5 * 7 * 4);
  const torch::Tensor back = *DecodeTensor(m, {});
  EXPECT_TRUE(torch::equal(back, t));
}

TEST(TensorCodec, NonContiguousAndEmptyTensorsRoundTrip) {
  const torch::Tensor t = torch::arange(12, torch::kFloat).view({3, 4}).t();
  EXPECT_TRUE(torch::equal(*DecodeTensor(Encoded(t), {}), t));
  const torch::Tensor empty = torch::empty({0, 4});
  EXPECT_EQ(DecodeTensor(Encoded(empty), {})->sizes(), empty.sizes());
}

TEST(TensorCodec, Fp16HalvesTheBytesWithinHalfPrecision) {
  torch::manual_seed(4);
  const torch::Tensor t = torch::randn({4, 16, 8, 8});
  const v1::Tensor m = Encoded(t, WireEncoding::kFp16);
  EXPECT_EQ(m.encoding(), v1::ENCODING_FP16);
  EXPECT_EQ(m.data().size(), t.numel() * 2u);
  const torch::Tensor back = *DecodeTensor(m, {});
  EXPECT_EQ(back.scalar_type(), torch::kFloat);
  // binary16 keeps 11 significant bits: relative error at most 2^-11 in the normal range.
  const torch::Tensor rel = (back - t).abs() / t.abs().clamp_min(1e-4);
  EXPECT_LE(rel.max().item<double>(), std::pow(2.0, -11) + 1e-7);
  EXPECT_GT((back - t).abs().max().item<double>(), 0.0) << "fp16 should round something";
}

TEST(TensorCodec, Int64AlwaysTravelsExactly) {
  const torch::Tensor t = torch::tensor({int64_t{1} << 40, int64_t{-3}, int64_t{0}});
  const v1::Tensor m = Encoded(t, WireEncoding::kFp16);
  EXPECT_EQ(m.encoding(), v1::ENCODING_INT64);
  EXPECT_TRUE(torch::equal(*DecodeTensor(m, {}), t));
}

TEST(TensorCodec, RefusesToEncodeOtherDtypes) {
  v1::Tensor m;
  EXPECT_TRUE(Refused(EncodeTensor(torch::zeros({2}, torch::kDouble), WireEncoding::kFp32, &m),
                      absl::StatusCode::kInvalidArgument, "dtype Double"));
  EXPECT_TRUE(Refused(EncodeTensor(torch::Tensor(), WireEncoding::kFp32, &m),
                      absl::StatusCode::kInvalidArgument, "undefined tensor"));
}

TEST(TensorCodec, RejectsUnknownDtype) {
  v1::Tensor m = Encoded(torch::zeros({2}));
  m.set_dtype(static_cast<v1::DType>(42));
  ExpectRejected(m, {}, "unknown dtype 42");
  m.set_dtype(v1::DTYPE_UNSPECIFIED);
  ExpectRejected(m, {}, "unknown dtype 0");
}

TEST(TensorCodec, RejectsUnknownOrMismatchedEncoding) {
  v1::Tensor m = Encoded(torch::zeros({2}));
  m.set_encoding(static_cast<v1::Encoding>(9));
  ExpectRejected(m, {}, "unknown encoding 9");
  m.set_encoding(v1::ENCODING_INT64);
  ExpectRejected(m, {}, "cannot carry dtype DTYPE_FLOAT32");
}

TEST(TensorCodec, RejectsTruncatedAndOversizedBytes) {
  v1::Tensor m = Encoded(torch::ones({2, 3}));
  m.mutable_data()->resize(23);
  ExpectRejected(m, {}, "23 data bytes, but shape [2, 3] in ENCODING_FP32 needs 24");
  m.mutable_data()->resize(25);
  ExpectRejected(m, {}, "25 data bytes");
}

TEST(TensorCodec, RejectsShapesBeyondLimits) {
  v1::Tensor m = Encoded(torch::ones({2, 2}));
  m.add_shape(-1);
  ExpectRejected(m, {}, "negative dimension");

  m = Encoded(torch::ones({1}));
  m.clear_shape();
  for (int i = 0; i < 9; ++i) m.add_shape(1);
  ExpectRejected(m, {}, "rank 9 exceeds the limit of 8");

  m.clear_shape();  // 2^62 elements would overflow a byte count: caught before multiplying
  m.add_shape(int64_t{1} << 31);
  m.add_shape(int64_t{1} << 31);
  ExpectRejected(m, {}, "exceeds the limit of");
}

TEST(TensorCodec, RejectsUnexpectedShapeAndDtype) {
  DecodeLimits limits;
  limits.expected_shape = std::vector<int64_t>{8, 16, 32, 32};
  ExpectRejected(Encoded(torch::zeros({8, 16, 32, 31})), limits,
                 "shape [8, 16, 32, 31], expected [8, 16, 32, 32]");
  EXPECT_TRUE(DecodeTensor(Encoded(torch::zeros({8, 16, 32, 32})), limits).ok());

  DecodeLimits want_float;
  want_float.expected_dtype = v1::DTYPE_FLOAT32;
  ExpectRejected(Encoded(torch::zeros({2}, torch::kLong)), want_float,
                 "dtype DTYPE_INT64, expected DTYPE_FLOAT32");
}

// A ReLU-like activation: about half zeros, an element count that is not a multiple of 8.
torch::Tensor Rectified(std::vector<int64_t> shape, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::relu(torch::randn(shape));
}

TEST(SparseLayouts, NonZeroRoundTripIsExactAndSmaller) {
  const torch::Tensor a = Rectified({3, 5, 7, 3}, 11);  // 315 elements
  const int64_t nonzero = a.ne(0).sum().item<int64_t>();
  v1::Tensor m;
  Support sent;
  ASSERT_TRUE(EncodeRectified(a, WireEncoding::kFp32, &m, &sent).ok());
  EXPECT_EQ(m.layout(), v1::LAYOUT_NONZERO);
  EXPECT_EQ(m.mask().size(), 40u);  // ceil(315 / 8)
  EXPECT_EQ(static_cast<int64_t>(m.data().size()), nonzero * 4);
  EXPECT_EQ(sent.elements, 315);
  EXPECT_EQ(sent.count, nonzero);
  Support received;
  const torch::Tensor back = *DecodeTensor(m, {}, "a2", &received);
  EXPECT_TRUE(torch::equal(back, a));
  EXPECT_EQ(received.mask, sent.mask) << "both ends hold the same support";
  EXPECT_EQ(received.count, nonzero);
}

// The kernels work 8 elements at a time: every size around a byte, every density from all
// zeros to none, both encodings.
TEST(SparseLayouts, RoundTripsAtEverySizeAndDensity) {
  torch::manual_seed(15);
  for (int64_t n : {1, 7, 8, 9, 15, 16, 17, 1000, 4099})
    for (double zeros : {1.0, 0.9, 0.5, 0.1, 0.0})
      for (WireEncoding e : {WireEncoding::kFp32, WireEncoding::kFp16}) {
        const torch::Tensor values = torch::rand({n}) + 0.25;  // exactly representable-ish
        const torch::Tensor a = values * torch::rand({n}).ge(zeros);
        const torch::Tensor g = torch::randn({n});
        v1::Tensor am, gm;
        Support sent, received;
        ASSERT_TRUE(EncodeRectified(a, e, &am, &sent).ok());
        const torch::Tensor back = *DecodeTensor(am, {}, "a", &received);
        const torch::Tensor want = e == WireEncoding::kFp16 ? a.to(torch::kHalf).to(torch::kFloat) : a;
        ASSERT_TRUE(torch::equal(back, want)) << "n " << n << " zeros " << zeros;
        if (am.layout() != v1::LAYOUT_NONZERO) {
          EXPECT_TRUE(sent.empty() && received.empty());
          continue;
        }
        ASSERT_TRUE(EncodeOnSupport(g, received, e, &gm).ok());
        DecodeLimits limits;
        limits.support = &sent;
        const torch::Tensor g_back = *DecodeTensor(gm, limits, "g");
        const torch::Tensor g_want =
            (e == WireEncoding::kFp16 ? g.to(torch::kHalf).to(torch::kFloat) : g) * a.ne(0);
        ASSERT_TRUE(torch::equal(g_back, g_want)) << "n " << n << " zeros " << zeros;
      }
}

TEST(SparseLayouts, DenseWhenTheZerosDoNotPayForTheMask) {
  torch::manual_seed(12);
  const torch::Tensor a = torch::rand({4, 64}) + 0.5;  // no zeros
  v1::Tensor m;
  Support support;
  support.elements = 7;  // emptied by the call
  ASSERT_TRUE(EncodeRectified(a, WireEncoding::kFp32, &m, &support).ok());
  EXPECT_EQ(m.layout(), v1::LAYOUT_DENSE);
  EXPECT_TRUE(m.mask().empty());
  EXPECT_TRUE(support.empty());
  EXPECT_TRUE(torch::equal(*DecodeTensor(m, {}), a));
}

TEST(SparseLayouts, GradientOnSupportDecodesToTheGradientAtTheNonZeros) {
  const torch::Tensor a = Rectified({2, 4, 9, 9}, 13);
  const torch::Tensor g = torch::randn({2, 4, 9, 9});
  for (WireEncoding e : {WireEncoding::kFp32, WireEncoding::kFp16}) {
    v1::Tensor am, gm;
    Support sent, received;
    ASSERT_TRUE(EncodeRectified(a, e, &am, &sent).ok());
    ASSERT_TRUE(DecodeTensor(am, {}, "a2", &received).ok());
    ASSERT_TRUE(EncodeOnSupport(g, received, e, &gm).ok());
    EXPECT_EQ(gm.layout(), v1::LAYOUT_ON_SUPPORT);
    EXPECT_TRUE(gm.mask().empty()) << "the mask does not travel twice";
    EXPECT_EQ(static_cast<int64_t>(gm.data().size()), sent.count * (e == WireEncoding::kFp16 ? 2 : 4));
    DecodeLimits limits;
    limits.support = &sent;
    const torch::Tensor back = *DecodeTensor(gm, limits, "g2");
    const torch::Tensor want = g * a.ne(0);
    if (e == WireEncoding::kFp32)
      EXPECT_TRUE(torch::equal(back, want));
    else
      EXPECT_TRUE(torch::allclose(back, want, 1e-3, 1e-3));
  }
}

TEST(SparseLayouts, Fp16SupportComesFromTheFloat32Values) {
  // 1e-9 rounds to 0 in fp16, but it is non-zero in float32: it stays on the support (sent as
  // 0), so that the gradient's sender and receiver agree on which elements travel.
  torch::Tensor a = torch::zeros({64});
  a[3] = 1e-9f;
  a[10] = 2.0f;
  v1::Tensor m;
  Support sent, received;
  ASSERT_TRUE(EncodeRectified(a, WireEncoding::kFp16, &m, &sent).ok());
  EXPECT_EQ(m.layout(), v1::LAYOUT_NONZERO);
  EXPECT_EQ(sent.count, 2);
  const torch::Tensor back = *DecodeTensor(m, {}, "a2", &received);
  EXPECT_EQ(received.count, 2);
  EXPECT_EQ(back[3].item<float>(), 0.0f);
  EXPECT_EQ(back[10].item<float>(), 2.0f);
}

// Both ends of a Split stream, in memory: a training step's gradients go on the supports of
// its activations, and a forward-only exchange leaves no support for a gradient to use.
TEST(SplitStepCodec, CarriesSupportsFromActivationsToTheirGradients) {
  SplitStepCodec site(/*sends_rectified=*/true), coordinator(/*sends_rectified=*/true);
  const WireEncoding e = WireEncoding::kFp32;
  const torch::Tensor a1 = Rectified({2, 4, 8, 8}, 16), a2 = Rectified({2, 8, 4, 4}, 17);
  const torch::Tensor g2 = torch::randn_like(a2), g1 = torch::randn_like(a1);
  v1::Tensor m;
  ASSERT_TRUE(site.EncodeActivation(a1, e, /*training=*/true, &m).ok());
  EXPECT_EQ(m.layout(), v1::LAYOUT_NONZERO);
  EXPECT_TRUE(torch::equal(*coordinator.DecodeActivation(m, {}, "a1", true), a1));
  ASSERT_TRUE(coordinator.EncodeActivation(a2, e, true, &m).ok());
  EXPECT_TRUE(torch::equal(*site.DecodeActivation(m, {}, "a2", true), a2));
  ASSERT_TRUE(site.EncodeGradient(g2, e, &m).ok());
  EXPECT_EQ(m.layout(), v1::LAYOUT_ON_SUPPORT);
  EXPECT_TRUE(torch::equal(*coordinator.DecodeGradient(m, {}, "g2"), g2 * a2.ne(0)));
  ASSERT_TRUE(coordinator.EncodeGradient(g1, e, &m).ok());
  EXPECT_EQ(m.layout(), v1::LAYOUT_ON_SUPPORT);
  EXPECT_TRUE(torch::equal(*site.DecodeGradient(m, {}, "g1"), g1 * a1.ne(0)));

  // An evaluation exchange: sparse too, but no gradient may follow it on a support.
  ASSERT_TRUE(site.EncodeActivation(a1, e, /*training=*/false, &m).ok());
  ASSERT_TRUE(coordinator.DecodeActivation(m, {}, "a1", false).ok());
  ASSERT_TRUE(coordinator.EncodeActivation(a2, e, false, &m).ok());
  ASSERT_TRUE(site.DecodeActivation(m, {}, "a2", false).ok());
  ASSERT_TRUE(site.EncodeGradient(g2, e, &m).ok());
  EXPECT_EQ(m.layout(), v1::LAYOUT_DENSE) << "no support to send on";
  v1::Tensor on_support;
  Support support;
  v1::Tensor unused;
  ASSERT_TRUE(EncodeRectified(a2, e, &unused, &support).ok());
  ASSERT_TRUE(EncodeOnSupport(g2, support, e, &on_support).ok());
  const absl::StatusOr<torch::Tensor> refused = coordinator.DecodeGradient(on_support, {}, "g2");
  ASSERT_TRUE(Refused(refused, absl::StatusCode::kInvalidArgument));
  EXPECT_NE(refused.status().message().find("no activation crossed with LAYOUT_NONZERO"),
            std::string::npos);
}

TEST(SparseLayouts, RejectsMalformedSparseTensors) {
  const torch::Tensor a = Rectified({3, 7, 3}, 14);  // 63 elements: one padding bit
  v1::Tensor good;
  Support support;
  ASSERT_TRUE(EncodeRectified(a, WireEncoding::kFp32, &good, &support).ok());
  ASSERT_EQ(good.layout(), v1::LAYOUT_NONZERO);

  v1::Tensor m = good;
  m.mutable_mask()->pop_back();
  ExpectRejected(m, {}, "a mask of 7 bytes, but shape [3, 7, 3] needs 8");
  m = good;
  (*m.mutable_mask())[7] = static_cast<char>((*m.mutable_mask())[7] | 0x80);
  ExpectRejected(m, {}, "bits set past the last element");
  m = good;
  m.mutable_data()->resize(m.data().size() - 4);
  ExpectRejected(m, {}, "stored elements (LAYOUT_NONZERO)");
  m = Encoded(a);
  m.set_mask("x");
  ExpectRejected(m, {}, "a mask with LAYOUT_DENSE");
  m = good;
  m.set_layout(static_cast<v1::Layout>(7));
  ExpectRejected(m, {}, "unknown layout 7");
  m = Encoded(torch::zeros({8}, torch::kLong));
  m.set_layout(v1::LAYOUT_NONZERO);
  m.set_mask(std::string(1, '\0'));
  m.clear_data();
  ExpectRejected(m, {}, "is for float tensors");

  // A gradient on a support: only with the support of this step's activation, of its size.
  v1::Tensor g;
  ASSERT_TRUE(EncodeOnSupport(torch::randn({3, 7, 3}), support, WireEncoding::kFp32, &g).ok());
  ExpectRejected(g, {}, "no activation crossed with LAYOUT_NONZERO");
  DecodeLimits limits;
  const Support none;
  limits.support = &none;
  ExpectRejected(g, limits, "no activation crossed with LAYOUT_NONZERO");
  Support other = support;
  other.elements = 64;
  limits.support = &other;
  ExpectRejected(g, limits, "has 63 elements, its activation's support 64");
  limits.support = &support;
  m = g;
  m.mutable_data()->append("1234");
  ExpectRejected(m, limits, "stored elements (LAYOUT_ON_SUPPORT)");
  EXPECT_TRUE(DecodeTensor(g, limits).ok());

  v1::Tensor unused;
  EXPECT_TRUE(Refused(EncodeOnSupport(torch::randn({4}), support, WireEncoding::kFp32, &unused),
                      absl::StatusCode::kInvalidArgument,
                      "the gradient has 4 elements, its activation's support 63"));
  EXPECT_TRUE(Refused(EncodeOnSupport(torch::randn({4}), Support(), WireEncoding::kFp32, &unused),
                      absl::StatusCode::kFailedPrecondition, "needs a non-empty support"));
  EXPECT_TRUE(Refused(
      EncodeRectified(torch::zeros({4}, torch::kLong), WireEncoding::kFp32, &unused, &support),
      absl::StatusCode::kInvalidArgument));
}

TEST(TensorCodec, RejectsNonFiniteValuesWhenAsked) {
  torch::Tensor t = torch::zeros({4});
  t[1] = std::numeric_limits<float>::quiet_NaN();
  t[3] = std::numeric_limits<float>::infinity();
  DecodeLimits strict;
  strict.reject_non_finite = true;
  ExpectRejected(Encoded(t), strict, "1 NaN, 1 Inf");
  ExpectRejected(Encoded(t, WireEncoding::kFp16), strict, "NaN");
  EXPECT_TRUE(DecodeTensor(Encoded(t), {}).ok()) << "allowed unless asked";
  // One -Inf as the very last value of an activation-sized tensor is still found.
  torch::Tensor big = torch::randn({2, 16, 32, 32});
  EXPECT_TRUE(DecodeTensor(Encoded(big), strict).ok());
  big.view(-1)[big.numel() - 1] = -std::numeric_limits<float>::infinity();
  ExpectRejected(Encoded(big), strict, "0 NaN, 1 Inf");
}

// ---- The sparse layouts' kernels: the vector versions (AVX2, where the CPU has it) against
// the portable ones, byte for byte. ---------------------------------------------------------

// n floats, a share `zeros` of them +0.0 or -0.0, and the given specials placed at random.
std::vector<float> Activation(int64_t n, double zeros, std::mt19937& rng,
                              const std::vector<float>& specials = {}) {
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::normal_distribution<float> g(0.0f, 3.0f);
  std::vector<float> x(n);
  for (float& v : x) v = u(rng) < zeros ? (u(rng) < 0.5f ? 0.0f : -0.0f) : g(rng);
  for (float s : specials)
    if (n > 0) x[std::uniform_int_distribution<int64_t>(0, n - 1)(rng)] = s;
  return x;
}

std::vector<uint32_t> Bits(const float* v, int64_t n) {
  std::vector<uint32_t> b(n);
  if (n > 0) std::memcpy(b.data(), v, n * 4);  // memcpy from null is undefined even for 0 bytes
  return b;
}

TEST(SparseKernels, VectorAndPortableAgreeByteForByte) {
  using sparse::Kernels;
  RecordProperty("vector_kernels", sparse::HasVectorKernels() ? "avx2" : "none");
  std::mt19937 rng(21);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t n : {0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4099})
    for (double zeros : {1.0, 0.9, 0.5, 0.1, 0.0})
      for (bool special : {false, true}) {
        SCOPED_TRACE("n " + std::to_string(n) + " zeros " + std::to_string(zeros));
        const std::vector<float> x =
            Activation(n, zeros, rng, special ? std::vector<float>{nan, inf, -inf} : std::vector<float>{});
        const int64_t bytes = sparse::MaskBytes(n);
        std::vector<uint8_t> mask_v(bytes), mask_p(bytes);
        std::vector<float> values_v(n + sparse::kSlack), values_p(n + sparse::kSlack);
        const int64_t count_v = sparse::MaskAndCompact(x.data(), n, mask_v.data(), values_v.data());
        const int64_t count_p = sparse::MaskAndCompact(x.data(), n, mask_p.data(), values_p.data(),
                                                       Kernels::kPortable);
        ASSERT_EQ(count_v, count_p);
        ASSERT_EQ(mask_v, mask_p);
        ASSERT_EQ(Bits(values_v.data(), count_v), Bits(values_p.data(), count_p));
        ASSERT_EQ(sparse::CountBits(mask_v.data(), bytes), count_v);
        int64_t nonzero = 0;  // -0.0 is a zero, NaN is not
        for (float v : x) nonzero += v != 0.0f;
        ASSERT_EQ(count_v, nonzero);

        // Compact at the same mask gathers the same values.
        std::vector<float> gathered_v(count_v + sparse::kSlack), gathered_p(count_v + sparse::kSlack);
        sparse::Compact(x.data(), n, mask_v.data(), gathered_v.data());
        sparse::Compact(x.data(), n, mask_v.data(), gathered_p.data(), Kernels::kPortable);
        ASSERT_EQ(Bits(gathered_v.data(), count_v), Bits(values_v.data(), count_v));
        ASSERT_EQ(Bits(gathered_p.data(), count_v), Bits(values_v.data(), count_v));

        // Expand restores x, with +0.0 for both zeros.
        std::vector<float> out_v(n, 7.0f), out_p(n, 7.0f), want(x);
        for (float& v : want) v = v == 0.0f ? 0.0f : v;
        const bool finite_v = sparse::Expand(values_v.data(), count_v, n, mask_v.data(), out_v.data());
        const bool finite_p = sparse::Expand(values_v.data(), count_v, n, mask_v.data(), out_p.data(),
                                             Kernels::kPortable);
        ASSERT_EQ(Bits(out_v.data(), n), Bits(want.data(), n));
        ASSERT_EQ(Bits(out_p.data(), n), Bits(want.data(), n));
        EXPECT_EQ(finite_v, !special || n == 0);
        EXPECT_EQ(finite_p, !special || n == 0);
        EXPECT_EQ(sparse::AllFinite(x.data(), n), !special || n == 0);
        EXPECT_EQ(sparse::AllFinite(x.data(), n, Kernels::kPortable), !special || n == 0);
      }
}

// Expand reads its values straight from a received message: never past the last stored one.
// The values end right before a page that may not be read; a read beyond them crashes.
TEST(SparseKernels, ExpandReadsNothingPastTheStoredValues) {
  const int64_t page = sysconf(_SC_PAGESIZE);
  void* region = mmap(nullptr, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(region, MAP_FAILED);
  ASSERT_EQ(mprotect(static_cast<char*>(region) + page, page, PROT_NONE), 0);
  std::mt19937 rng(5);
  for (int64_t n : {1, 8, 13, 64, 200, 1001})
    for (double zeros : {0.0, 0.5, 0.95}) {
      const std::vector<float> x = Activation(n, zeros, rng);
      std::vector<uint8_t> mask(sparse::MaskBytes(n));
      std::vector<float> values(n + sparse::kSlack);
      const int64_t count = sparse::MaskAndCompact(x.data(), n, mask.data(), values.data());
      ASSERT_LE(count * 4, page);
      float* at_the_edge = reinterpret_cast<float*>(static_cast<char*>(region) + page) - count;
      std::memcpy(at_the_edge, values.data(), count * 4);
      for (sparse::Kernels k : {sparse::Kernels::kFastest, sparse::Kernels::kPortable}) {
        std::vector<float> out(n);
        EXPECT_TRUE(sparse::Expand(at_the_edge, count, n, mask.data(), out.data(), k));
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(out[i], x[i] == 0.0f ? 0.0f : x[i]);
      }
    }
  munmap(region, 2 * page);
}

// A NaN or Inf among a sparse tensor's stored values is refused like a dense one's, in either
// sparse layout and encoding, wherever it sits (the vector loop or the last few values).
TEST(SparseLayouts, RejectsNonFiniteStoredValues) {
  DecodeLimits strict;
  strict.reject_non_finite = true;
  for (int64_t at : {0, 37, 998, 999})
    for (WireEncoding e : {WireEncoding::kFp32, WireEncoding::kFp16}) {
      torch::manual_seed(4);
      torch::Tensor a = torch::relu(torch::randn({1000}));
      a[at] = std::numeric_limits<float>::quiet_NaN();
      v1::Tensor m;
      Support support;
      ASSERT_TRUE(EncodeRectified(a, e, &m, &support).ok());
      ASSERT_EQ(m.layout(), v1::LAYOUT_NONZERO);
      ExpectRejected(m, strict, "1 NaN, 0 Inf");
      torch::Tensor g = a.clone().nan_to_num(0.0);
      g[at] = -std::numeric_limits<float>::infinity();
      v1::Tensor gm;
      ASSERT_TRUE(EncodeOnSupport(g, support, e, &gm).ok());
      DecodeLimits on_support = strict;
      on_support.support = &support;
      ExpectRejected(gm, on_support, "0 NaN, 1 Inf");
    }
}

// Half precision: the vector and portable conversions give LibTorch's bits, for every half
// value back to float, and for floats across half's range (subnormals, ties, overflow, NaN).
TEST(SparseKernels, HalfConversionsMatchLibTorch) {
  std::vector<uint16_t> every_half(65536);
  for (int i = 0; i < 65536; ++i) every_half[i] = static_cast<uint16_t>(i);
  const torch::Tensor want_float =
      torch::from_blob(every_half.data(), {65536}, torch::kShort).view(torch::kHalf).to(torch::kFloat);
  for (sparse::Kernels k : {sparse::Kernels::kFastest, sparse::Kernels::kPortable}) {
    std::vector<float> got(65536);
    sparse::FromHalf(every_half.data(), 65536, got.data(), k);
    const float* want = want_float.data_ptr<float>();
    for (int i = 0; i < 65536; ++i) {
      if (std::isnan(want[i])) {
        ASSERT_TRUE(std::isnan(got[i])) << i;
        continue;
      }
      ASSERT_EQ(Bits(&got[i], 1), Bits(&want[i], 1)) << "half bits " << i;
    }
  }
  torch::manual_seed(8);
  std::vector<torch::Tensor> parts;
  for (double scale : {1e-8, 1e-6, 1e-4, 1.0, 1e3, 7e4}) parts.push_back(torch::randn({1001}) * scale);
  // Ties between two halves (1 + k/1024 + 1/2048) and the edges of the range.
  parts.push_back(1.0 + (torch::arange(64).to(torch::kFloat) * 2 + 1) / 2048.0);
  parts.push_back(torch::tensor({0.0f, -0.0f, 65504.0f, 65519.0f, 65520.0f, 5.96e-8f, 2.98e-8f,
                                 std::numeric_limits<float>::infinity(),
                                 -std::numeric_limits<float>::infinity()}));
  const torch::Tensor x = torch::cat(parts);
  const torch::Tensor want_half = x.to(torch::kHalf);
  for (sparse::Kernels k : {sparse::Kernels::kFastest, sparse::Kernels::kPortable}) {
    std::vector<uint16_t> got(x.numel());
    sparse::ToHalf(x.data_ptr<float>(), x.numel(), got.data(), k);
    ASSERT_EQ(std::memcmp(got.data(), want_half.data_ptr(), got.size() * 2), 0);
  }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  uint16_t h = 0;
  sparse::ToHalf(&nan, 1, &h);
  EXPECT_EQ(h & 0x7c00, 0x7c00);
  EXPECT_NE(h & 0x03ff, 0) << "NaN stays NaN";
}

}  // namespace
}  // namespace splitfed
