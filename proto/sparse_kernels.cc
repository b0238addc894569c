#include "proto/sparse_kernels.h"

#include <cfloat>
#include <cmath>
#include <cstring>

#include "c10/util/Half.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define SPLITFED_X86 1
#endif

namespace splitfed::sparse {
namespace {

// Per mask byte m (8 elements; bit j is element j):
// - count: its set bits;
// - slot[j]: where element j goes among the byte's stored values: its rank among the set bits
//   if bit j is set, else `count`, a place the next byte's values overwrite (portable kernels,
//   which select without a branch: a mask that follows a ReLU is as unpredictable as the
//   activation's signs);
// - pack[r]: the element of the r-th set bit (vector compaction's permutation);
// - rank[j]: the rank of element j among the set bits, 0 if unset (vector expansion's).
struct ByteTable {
  uint8_t count[256];
  uint8_t slot[256][8];
  uint8_t pack[256][8];
  uint8_t rank[256][8];
  ByteTable() {
    for (int m = 0; m < 256; ++m) {
      count[m] = static_cast<uint8_t>(__builtin_popcount(m));
      int r = 0;
      for (int j = 0; j < 8; ++j) {
        pack[m][j] = 0;
        const bool set = (m >> j) & 1;
        slot[m][j] = static_cast<uint8_t>(set ? r : count[m]);
        rank[m][j] = static_cast<uint8_t>(set ? r : 0);
        if (set) pack[m][r++] = static_cast<uint8_t>(j);
      }
    }
  }
};

const ByteTable& Table() {
  static const ByteTable table;
  return table;
}

inline bool IsFinite(float v) { return std::fabs(v) <= FLT_MAX; }  // NaN compares false

// ---- Portable ------------------------------------------------------------------------------

// Appends the `lanes` elements of `in` whose bit in m is set to values[*k...]; writes all of
// them (unset ones to the scratch slot).
inline void CompactByte(const float* in, unsigned m, int lanes, float* values, int64_t* k) {
  const ByteTable& table = Table();
  for (int j = 0; j < lanes; ++j) values[*k + table.slot[m][j]] = in[j];
  *k += table.count[m];
}

// Element j of a mask byte's `lanes` from v[k...]: the next value where bit j is set, +0.0
// elsewhere. Reads up to v[k + 7] for a full byte.
inline void ExpandByte(const float* v, int64_t k, unsigned m, int lanes, float* out) {
  const ByteTable& table = Table();
  for (int j = 0; j < lanes; ++j) {
    uint32_t bits;
    std::memcpy(&bits, &v[k + table.slot[m][j]], 4);
    bits &= 0u - ((m >> j) & 1u);
    std::memcpy(&out[j], &bits, 4);
  }
}

int64_t MaskAndCompactPortable(const float* x, int64_t n, uint8_t* mask, float* values) {
  int64_t k = 0;
  for (int64_t b = 0; b < MaskBytes(n); ++b) {
    const float* in = x + 8 * b;
    const int lanes = static_cast<int>(n - 8 * b < 8 ? n - 8 * b : 8);
    unsigned m = 0;
    for (int j = 0; j < lanes; ++j) m |= static_cast<unsigned>(in[j] != 0.0f) << j;
    mask[b] = static_cast<uint8_t>(m);
    CompactByte(in, m, lanes, values, &k);
  }
  return k;
}

void CompactPortable(const float* x, int64_t n, const uint8_t* mask, float* values) {
  int64_t k = 0;
  for (int64_t b = 0; b < MaskBytes(n); ++b) {
    const int lanes = static_cast<int>(n - 8 * b < 8 ? n - 8 * b : 8);
    CompactByte(x + 8 * b, mask[b], lanes, values, &k);
  }
}

bool AllFinitePortable(const float* x, int64_t n) {
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) bad |= !IsFinite(x[i]);
  return !bad;
}

// Where Expand reads its values: the caller's buffer while 8 values remain past the read
// position, then a copy of the last few followed by zeros, so that no read leaves `values`.
struct ValueReader {
  const float* v;
  int64_t k = 0;     // read position in v
  int64_t left;      // stored values from k on
  float tail[16];
  ValueReader(const float* values, int64_t stored) : v(values), left(stored) {}
  // Makes v[k .. k + 7] readable.
  void Ready() {
    if (left >= 8 || v == tail) return;
    std::memset(tail, 0, sizeof(tail));
    std::memcpy(tail, v + k, left * 4);
    v = tail;
    k = 0;
  }
  void Advance(int count) {
    k += count;
    left -= count;
  }
};

bool ExpandPortable(const float* values, int64_t stored, int64_t n, const uint8_t* mask,
                    float* out) {
  const ByteTable& table = Table();
  ValueReader r(values, stored);
  for (int64_t b = 0; b < MaskBytes(n); ++b) {
    const int lanes = static_cast<int>(n - 8 * b < 8 ? n - 8 * b : 8);
    r.Ready();
    ExpandByte(r.v, r.k, mask[b], lanes, out + 8 * b);
    r.Advance(table.count[mask[b]]);
  }
  return AllFinitePortable(values, stored);
}

// ---- AVX2 ----------------------------------------------------------------------------------
#ifdef SPLITFED_X86
#define SPLITFED_AVX2 __attribute__((target("avx2")))

// The byte table's 8 entries for m, widened to a permutation's 8 indices.
SPLITFED_AVX2 inline __m256i Indices(const uint8_t (&row)[8]) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row)));
}

// Lanes of v that are NaN or ±Inf, as all-ones.
SPLITFED_AVX2 inline __m256 NonFinite(__m256 v) {
  const __m256 magnitude = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
  return _mm256_cmp_ps(magnitude, _mm256_set1_ps(FLT_MAX), _CMP_NLE_UQ);
}

SPLITFED_AVX2 int64_t MaskAndCompactAvx2(const float* x, int64_t n, uint8_t* mask,
                                          float* values) {
  const ByteTable& table = Table();
  const __m256 zero = _mm256_setzero_ps();
  int64_t k = 0;
  const int64_t full = n / 8;
  for (int64_t b = 0; b < full; ++b) {
    const __m256 v = _mm256_loadu_ps(x + 8 * b);
    // Unordered not-equal: NaN counts as non-zero, -0.0 equals 0.0, as in the portable loop.
    const unsigned m = static_cast<unsigned>(
        _mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_NEQ_UQ)));
    mask[b] = static_cast<uint8_t>(m);
    _mm256_storeu_ps(values + k, _mm256_permutevar8x32_ps(v, Indices(table.pack[m])));
    k += table.count[m];
  }
  if (n % 8) {
    const float* in = x + 8 * full;
    unsigned m = 0;
    for (int j = 0; j < n % 8; ++j) m |= static_cast<unsigned>(in[j] != 0.0f) << j;
    mask[full] = static_cast<uint8_t>(m);
    CompactByte(in, m, static_cast<int>(n % 8), values, &k);
  }
  return k;
}

SPLITFED_AVX2 void CompactAvx2(const float* x, int64_t n, const uint8_t* mask, float* values) {
  const ByteTable& table = Table();
  int64_t k = 0;
  const int64_t full = n / 8;
  for (int64_t b = 0; b < full; ++b) {
    const unsigned m = mask[b];
    const __m256 v = _mm256_loadu_ps(x + 8 * b);
    _mm256_storeu_ps(values + k, _mm256_permutevar8x32_ps(v, Indices(table.pack[m])));
    k += table.count[m];
  }
  if (n % 8) CompactByte(x + 8 * full, mask[full], static_cast<int>(n % 8), values, &k);
}

SPLITFED_AVX2 bool ExpandAvx2(const float* values, int64_t stored, int64_t n,
                              const uint8_t* mask, float* out) {
  const ByteTable& table = Table();
  const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  __m256 bad = _mm256_setzero_ps();
  ValueReader r(values, stored);
  const int64_t full = n / 8;
  for (int64_t b = 0; b < full; ++b) {
    const unsigned m = mask[b];
    r.Ready();
    // Every value loaded is a stored one (or a zero of the tail): checking all 8 lanes checks
    // each stored value at least once.
    const __m256 v = _mm256_loadu_ps(r.v + r.k);
    bad = _mm256_or_ps(bad, NonFinite(v));
    const __m256 spread = _mm256_permutevar8x32_ps(v, Indices(table.rank[m]));
    const __m256i bits = _mm256_and_si256(_mm256_set1_epi32(static_cast<int>(m)), lane_bit);
    const __m256 set = _mm256_castsi256_ps(_mm256_cmpeq_epi32(bits, lane_bit));
    _mm256_storeu_ps(out + 8 * b, _mm256_and_ps(spread, set));
    r.Advance(table.count[m]);
  }
  bool finite = _mm256_movemask_ps(bad) == 0;
  if (n % 8) {
    const unsigned m = mask[full];
    r.Ready();
    ExpandByte(r.v, r.k, m, static_cast<int>(n % 8), out + 8 * full);
    for (int i = 0; i < table.count[m]; ++i) finite &= IsFinite(r.v[r.k + i]);
  }
  return finite;
}

SPLITFED_AVX2 bool AllFiniteAvx2(const float* x, int64_t n) {
  __m256 bad = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) bad = _mm256_or_ps(bad, NonFinite(_mm256_loadu_ps(x + i)));
  bool finite = _mm256_movemask_ps(bad) == 0;
  for (; i < n; ++i) finite &= IsFinite(x[i]);
  return finite;
}

// The half-precision conversions need F16C too (CPUs have had it since before AVX2); the
// vector kernels run only where both are present.
#define SPLITFED_AVX2_F16C __attribute__((target("avx2,f16c")))

SPLITFED_AVX2_F16C void ToHalfVector(const float* x, int64_t n, uint16_t* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) out[i] = c10::detail::fp16_ieee_from_fp32_value(x[i]);
}

SPLITFED_AVX2_F16C void FromHalfVector(const uint16_t* h, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
  for (; i < n; ++i) out[i] = c10::detail::fp16_ieee_to_fp32_value(h[i]);
}

#endif

bool Vector(Kernels kernels) { return kernels == Kernels::kFastest && HasVectorKernels(); }

}  // namespace

bool HasVectorKernels() {
#ifdef SPLITFED_X86
  static const bool has = [] {
    __builtin_cpu_init();
    // F16C is read from CPUID itself: clang's __builtin_cpu_supports does not know the name.
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
    return __builtin_cpu_supports("avx2") && f16c;
  }();
  return has;
#else
  return false;
#endif
}

int64_t CountBits(const uint8_t* mask, int64_t bytes) {
  const ByteTable& table = Table();
  int64_t count = 0;
  for (int64_t b = 0; b < bytes; ++b) count += table.count[mask[b]];
  return count;
}

int64_t MaskAndCompact(const float* x, int64_t n, uint8_t* mask, float* values,
                       Kernels kernels) {
#ifdef SPLITFED_X86
  if (Vector(kernels)) return MaskAndCompactAvx2(x, n, mask, values);
#endif
  return MaskAndCompactPortable(x, n, mask, values);
}

void Compact(const float* x, int64_t n, const uint8_t* mask, float* values, Kernels kernels) {
#ifdef SPLITFED_X86
  if (Vector(kernels)) return CompactAvx2(x, n, mask, values);
#endif
  CompactPortable(x, n, mask, values);
}

bool Expand(const float* values, int64_t stored, int64_t n, const uint8_t* mask, float* out,
            Kernels kernels) {
#ifdef SPLITFED_X86
  if (Vector(kernels)) return ExpandAvx2(values, stored, n, mask, out);
#endif
  return ExpandPortable(values, stored, n, mask, out);
}

bool AllFinite(const float* x, int64_t n, Kernels kernels) {
#ifdef SPLITFED_X86
  if (Vector(kernels)) return AllFiniteAvx2(x, n);
#endif
  return AllFinitePortable(x, n);
}

void ToHalf(const float* x, int64_t n, uint16_t* out, Kernels kernels) {
#ifdef SPLITFED_X86
  if (Vector(kernels)) return ToHalfVector(x, n, out);
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = c10::detail::fp16_ieee_from_fp32_value(x[i]);
}

void FromHalf(const uint16_t* h, int64_t n, float* out, Kernels kernels) {
#ifdef SPLITFED_X86
  if (Vector(kernels)) return FromHalfVector(h, n, out);
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = c10::detail::fp16_ieee_to_fp32_value(h[i]);
}


}  // namespace splitfed::sparse
