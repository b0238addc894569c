#include "colearning/reliability.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace splitfed::colearning {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kMinVariance = 1e-6;

double Normal(double x, double mean, double variance) {
  return std::exp(-(x - mean) * (x - mean) / (2 * variance)) / std::sqrt(2 * kPi * variance);
}

}  // namespace

std::vector<double> PerImageReliability(const at::Tensor& teacher_labels, const at::Tensor& masks,
                                        int64_t num_classes) {
  const int64_t n = masks.size(0);
  std::vector<double> out(n, 1.0);
  const torch::Tensor pred = teacher_labels.reshape({n, -1});
  const torch::Tensor truth = masks.reshape({n, -1});
  for (int64_t i = 0; i < n; ++i) {
    double sum = 0;
    int64_t classes = 0;
    for (int64_t c = 1; c < num_classes; ++c) {
      const torch::Tensor p = pred[i] == c, t = truth[i] == c;
      const int64_t np = p.sum().item<int64_t>(), nt = t.sum().item<int64_t>();
      if (np + nt == 0) continue;  // absent from both: not counted
      sum += 2.0 * (p & t).sum().item<int64_t>() / static_cast<double>(np + nt);
      ++classes;
    }
    if (classes > 0) out[i] = sum / classes;
  }
  return out;
}

double TwoGaussians::PosteriorLow(double x) const {
  const double low = weight[0] * Normal(x, mean[0], variance[0]);
  const double high = weight[1] * Normal(x, mean[1], variance[1]);
  if (low + high <= 0) return x <= (mean[0] + mean[1]) / 2 ? 1.0 : 0.0;  // far in a tail
  return low / (low + high);
}

absl::StatusOr<TwoGaussians> FitTwoGaussians(const std::vector<double>& values, int iterations) {
  const size_t n = values.size();
  if (n < 2) return absl::InvalidArgumentError(absl::StrCat("a mixture needs 2 values, got ", n));
  for (double v : values)
    if (!std::isfinite(v)) return absl::InvalidArgumentError("a mixture value is not finite");
  // Start from the lower and upper quartiles, each with the whole sample's variance.
  std::vector<double> sorted = values;
  std::sort(sorted.begin(), sorted.end());
  const double mean = std::accumulate(values.begin(), values.end(), 0.0) / n;
  double variance = 0;
  for (double v : values) variance += (v - mean) * (v - mean);
  variance = std::max(variance / n, kMinVariance);
  TwoGaussians g;
  g.mean[0] = sorted[n / 4];
  g.mean[1] = sorted[(3 * n) / 4];
  g.variance[0] = g.variance[1] = variance;
  std::vector<double> low(n);
  for (int it = 0; it < iterations; ++it) {
    for (size_t i = 0; i < n; ++i) low[i] = g.PosteriorLow(values[i]);
    double w0 = 0, m0 = 0, m1 = 0;
    for (size_t i = 0; i < n; ++i) w0 += low[i], m0 += low[i] * values[i], m1 += (1 - low[i]) * values[i];
    const double w1 = n - w0;
    if (w0 < 1e-9 || w1 < 1e-9) break;  // one component took everything: keep the last fit
    m0 /= w0;
    m1 /= w1;
    double v0 = 0, v1 = 0;
    for (size_t i = 0; i < n; ++i) {
      v0 += low[i] * (values[i] - m0) * (values[i] - m0);
      v1 += (1 - low[i]) * (values[i] - m1) * (values[i] - m1);
    }
    const double shift = std::abs(m0 - g.mean[0]) + std::abs(m1 - g.mean[1]);
    g.mean[0] = m0;
    g.mean[1] = m1;
    g.variance[0] = std::max(v0 / w0, kMinVariance);
    g.variance[1] = std::max(v1 / w1, kMinVariance);
    g.weight[0] = w0 / n;
    g.weight[1] = w1 / n;
    if (shift < 1e-10) break;
  }
  if (g.mean[0] > g.mean[1]) {
    std::swap(g.mean[0], g.mean[1]);
    std::swap(g.variance[0], g.variance[1]);
    std::swap(g.weight[0], g.weight[1]);
  }
  return g;
}

const char* DetectionModeName(DetectionMode mode) {
  return mode == DetectionMode::kRelative ? "relative" : "absolute";
}

bool ParseDetectionMode(const std::string& text, DetectionMode* mode) {
  for (DetectionMode m : {DetectionMode::kAbsolute, DetectionMode::kRelative})
    if (text == DetectionModeName(m)) {
      *mode = m;
      return true;
    }
  return false;
}

double AshmanD(const TwoGaussians& g) {
  return std::sqrt(2.0) * std::abs(g.mean[1] - g.mean[0]) /
         std::sqrt(g.variance[0] + g.variance[1]);
}

std::vector<bool> ReliableImages(const std::vector<double>& losses,
                                 const std::vector<double>& reliability,
                                 const ThresholdOptions& options) {
  const size_t n = losses.size();
  std::vector<bool> out(n, true);
  if (options.fixed_tau) {
    for (size_t i = 0; i < n; ++i) out[i] = reliability[i] >= options.tau_min;
    return out;
  }
  if (n < 4) return out;  // too few images to tell two populations apart
  absl::StatusOr<TwoGaussians> g = FitTwoGaussians(losses);
  if (!g.ok() || g->mean[1] - g->mean[0] < options.min_gap) return out;
  const bool relative = options.detection == DetectionMode::kRelative;
  if (relative && AshmanD(*g) < options.separation) return out;
  for (size_t i = 0; i < n; ++i)
    out[i] = g->PosteriorLow(losses[i]) > 0.5 && (relative || reliability[i] >= options.tau_min);
  return out;
}

double SiteReliability(const std::vector<bool>& reliable) {
  if (reliable.empty()) return 1.0;
  return static_cast<double>(std::count(reliable.begin(), reliable.end(), true)) / reliable.size();
}

}  // namespace splitfed::colearning
