// The inner loops of the sparse layouts (docs/PROTOCOL.md, "Sparse layouts"): a bit mask of
// the stored elements, and the stored elements packed in order. Plain C++ on raw buffers, so
// that the codec (tensor_codec.cc) stays about validation and these stay about speed.
//
// Each kernel has a portable version and, on CPUs with AVX2 (and F16C for the half-precision
// conversions), a vector one chosen at run time.
// Both give the same bytes; tests/proto_test.cc compares them.
#pragma once

#include <cstdint>

namespace splitfed::sparse {

// Which version of a kernel runs: the fastest this CPU has, or the portable one (for tests).
enum class Kernels { kFastest, kPortable };

// Elements a values buffer needs past its stored ones when it is written by MaskAndCompact or
// Compact: each mask byte's 8 lanes are written, the unset ones to places the next byte's
// values overwrite.
constexpr int64_t kSlack = 8;

inline int64_t MaskBytes(int64_t elements) { return (elements + 7) / 8; }

// Set bits of `bytes` mask bytes.
int64_t CountBits(const uint8_t* mask, int64_t bytes);

// The mask of x's non-zero elements (-0.0 counts as zero, NaN as non-zero) into
// mask[0, MaskBytes(n)), its bits past n zero, and those elements in order into `values`
// (room for their count + kSlack). Returns their count.
int64_t MaskAndCompact(const float* x, int64_t n, uint8_t* mask, float* values,
                       Kernels kernels = Kernels::kFastest);

// x's elements at the mask's set bits, in order, into `values` (room for them + kSlack).
void Compact(const float* x, int64_t n, const uint8_t* mask, float* values,
             Kernels kernels = Kernels::kFastest);

// The inverse: out[i] is the next stored value where bit i is set, +0.0 elsewhere. `stored`
// must be the mask's set bits among its first n; `values` is read only within [0, stored) and
// need not be aligned (it may point into a received message). Returns false if a stored
// value is NaN or infinite (out is then complete but holds them).
bool Expand(const float* values, int64_t stored, int64_t n, const uint8_t* mask, float* out,
            Kernels kernels = Kernels::kFastest);

// True if none of the n floats is NaN or infinite.
bool AllFinite(const float* x, int64_t n, Kernels kernels = Kernels::kFastest);

// float32 to IEEE half precision, rounding to nearest even (as LibTorch converts), and back.
// The buffers need not be aligned.
void ToHalf(const float* x, int64_t n, uint16_t* out, Kernels kernels = Kernels::kFastest);
void FromHalf(const uint16_t* h, int64_t n, float* out, Kernels kernels = Kernels::kFastest);

// True if this CPU runs the vector versions (`splitfed version` and the benchmarks say so).
bool HasVectorKernels();

}  // namespace splitfed::sparse
