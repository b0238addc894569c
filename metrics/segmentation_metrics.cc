#include "metrics/segmentation_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace splitfed {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::vector<uint8_t> ClassMask(const LabelView& v, int64_t c) {
  std::vector<uint8_t> mask(v.height * v.width);
  for (int64_t i = 0; i < v.height * v.width; ++i) mask[i] = v.labels[i] == c;
  return mask;
}

// A foreground pixel is on the boundary when a 4-neighbour is background or outside the image.
std::vector<uint8_t> Boundary(const std::vector<uint8_t>& m, int64_t h, int64_t w) {
  std::vector<uint8_t> edge(m.size(), 0);
  auto at = [&](int64_t y, int64_t x) {
    return y >= 0 && y < h && x >= 0 && x < w && m[y * w + x];
  };
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      if (m[y * w + x])
        edge[y * w + x] = !at(y - 1, x) || !at(y + 1, x) || !at(y, x - 1) || !at(y, x + 1);
  return edge;
}

// Exact 1-D squared distance transform (lower envelope of parabolas, Felzenszwalb &
// Huttenlocher 2012) of the n samples f[0], f[stride], ..., in place. Infinite samples (no
// feature) are left out of the envelope; a line with no feature stays infinite.
void DistanceTransform1D(double* f, int64_t n, int64_t stride, std::vector<double>& d,
                         std::vector<int64_t>& v, std::vector<double>& z) {
  d.resize(n);
  v.resize(n);
  z.resize(n + 1);
  auto val = [&](int64_t q) { return f[q * stride]; };
  int64_t k = -1;
  for (int64_t q = 0; q < n; ++q) {
    if (val(q) == kInf) continue;
    double s = -kInf;
    while (k >= 0) {
      const int64_t p = v[k];
      s = ((val(q) + double(q) * q) - (val(p) + double(p) * p)) / (2.0 * double(q - p));
      if (s > z[k]) break;
      --k;
    }
    ++k;
    v[k] = q;
    z[k] = k == 0 ? -kInf : s;
    z[k + 1] = kInf;
  }
  if (k < 0) return;
  k = 0;
  for (int64_t q = 0; q < n; ++q) {
    while (z[k + 1] < q) ++k;
    const double dq = double(q - v[k]);
    d[q] = dq * dq + val(v[k]);
  }
  for (int64_t q = 0; q < n; ++q) f[q * stride] = d[q];
}

double Percentile(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  const double pos = q / 100.0 * (values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (pos - lo) * (values[hi] - values[lo]);
}

}  // namespace

std::vector<double> DistanceToFeatures(const std::vector<uint8_t>& features, int64_t h,
                                       int64_t w) {
  std::vector<double> f(features.size());
  for (size_t i = 0; i < f.size(); ++i) f[i] = features[i] ? 0.0 : kInf;
  std::vector<double> d;
  std::vector<int64_t> v;
  std::vector<double> z;
  for (int64_t x = 0; x < w; ++x) DistanceTransform1D(f.data() + x, h, w, d, v, z);
  for (int64_t y = 0; y < h; ++y) DistanceTransform1D(f.data() + y * w, w, 1, d, v, z);
  for (double& value : f) value = std::sqrt(value);
  return f;
}

double Hd95(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, int64_t height,
            int64_t width) {
  const std::vector<uint8_t> edge_a = Boundary(a, height, width);
  const std::vector<uint8_t> edge_b = Boundary(b, height, width);
  const std::vector<double> to_a = DistanceToFeatures(edge_a, height, width);
  const std::vector<double> to_b = DistanceToFeatures(edge_b, height, width);
  std::vector<double> distances;
  for (size_t i = 0; i < a.size(); ++i) {
    if (edge_a[i]) distances.push_back(to_b[i]);
    if (edge_b[i]) distances.push_back(to_a[i]);
  }
  if (distances.empty()) throw std::invalid_argument("Hd95 needs two non-empty masks");
  return Percentile(std::move(distances), 95.0);
}

ClassScore ScoreClass(const LabelView& pred, const LabelView& truth, int64_t c) {
  if (pred.height != truth.height || pred.width != truth.width)
    throw std::invalid_argument("ScoreClass: prediction and truth sizes differ");
  const std::vector<uint8_t> p = ClassMask(pred, c);
  const std::vector<uint8_t> g = ClassMask(truth, c);
  int64_t np = 0, ng = 0, both = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    np += p[i];
    ng += g[i];
    both += p[i] & g[i];
  }
  if (np == 0 && ng == 0) return {1.0, 1.0, 0.0};
  const double diagonal = std::hypot(double(pred.height), double(pred.width));
  if (np == 0 || ng == 0) return {0.0, 0.0, diagonal};
  ClassScore s;
  s.dice = 2.0 * both / double(np + ng);
  s.iou = double(both) / double(np + ng - both);
  s.hd95 = Hd95(p, g, pred.height, pred.width);
  return s;
}

std::vector<ClassScore> ScoreImage(const LabelView& pred, const LabelView& truth,
                                   int64_t num_classes) {
  std::vector<ClassScore> scores;
  scores.reserve(num_classes);
  for (int64_t c = 0; c < num_classes; ++c) scores.push_back(ScoreClass(pred, truth, c));
  return scores;
}

ScoreAccumulator::ScoreAccumulator(int64_t num_classes)
    : num_classes_(num_classes), sums_(num_classes) {}

void ScoreAccumulator::Add(const std::vector<ClassScore>& image_scores) {
  if (static_cast<int64_t>(image_scores.size()) != num_classes_)
    throw std::invalid_argument("ScoreAccumulator: wrong number of classes");
  for (int64_t c = 0; c < num_classes_; ++c) {
    sums_[c].dice += image_scores[c].dice;
    sums_[c].iou += image_scores[c].iou;
    sums_[c].hd95 += image_scores[c].hd95;
  }
  ++count_;
}

ClassScore ScoreAccumulator::MeanOfClass(int64_t c) const {
  if (count_ == 0) return {};
  return {sums_[c].dice / count_, sums_[c].iou / count_, sums_[c].hd95 / count_};
}

ClassScore ScoreAccumulator::MeanForeground() const {
  ClassScore mean;
  const int64_t fg = num_classes_ - 1;
  if (fg <= 0 || count_ == 0) return mean;
  for (int64_t c = 1; c < num_classes_; ++c) {
    const ClassScore m = MeanOfClass(c);
    mean.dice += m.dice / fg;
    mean.iou += m.iou / fg;
    mean.hd95 += m.hd95 / fg;
  }
  return mean;
}

}  // namespace splitfed
