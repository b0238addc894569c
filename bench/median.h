// The median the benchmarks report: robust to the shared machine's occasional slow run.
#pragma once

#include <algorithm>
#include <vector>

namespace splitfed::bench {

inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  if (n == 0) return 0;
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace splitfed::bench
