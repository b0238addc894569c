#include "sim/label_noise.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "metrics/segmentation_metrics.h"

namespace splitfed::sim {
namespace {

constexpr double kPi = 3.14159265358979323846;

struct ModelName {
  NoiseModel model;
  const char* name;
};
constexpr ModelName kModels[] = {
    {NoiseModel::kErosion, "erosion"},   {NoiseModel::kDilation, "dilation"},
    {NoiseModel::kAffine, "affine"},     {NoiseModel::kElastic, "elastic"},
    {NoiseModel::kBoundary, "boundary"}, {NoiseModel::kMissing, "missing"},
    {NoiseModel::kExtra, "extra"},       {NoiseModel::kConfusion, "confusion"},
};

double Uniform(std::mt19937_64& rng, double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(rng);
}

// The recipes' pixel sizes are for 256² images.
double Scale(const LabelMask& m) { return std::min(m.height, m.width) / 256.0; }

// A value from [lo, lo + severity·(hi − lo)].
double Ranged(std::mt19937_64& rng, double lo, double hi, double severity) {
  return Uniform(rng, lo, lo + std::clamp(severity, 0.0, 1.0) * (hi - lo));
}

// Separable Gaussian blur with clamped borders.
std::vector<double> Blur(const std::vector<double>& in, int64_t h, int64_t w, double sigma) {
  const int64_t radius = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(3 * sigma)));
  std::vector<double> kernel(2 * radius + 1);
  double sum = 0;
  for (int64_t i = -radius; i <= radius; ++i)
    sum += kernel[i + radius] = std::exp(-double(i * i) / (2 * sigma * sigma));
  for (double& k : kernel) k /= sum;
  std::vector<double> tmp(in.size()), out(in.size());
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      double v = 0;
      for (int64_t i = -radius; i <= radius; ++i)
        v += kernel[i + radius] * in[y * w + std::clamp<int64_t>(x + i, 0, w - 1)];
      tmp[y * w + x] = v;
    }
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      double v = 0;
      for (int64_t i = -radius; i <= radius; ++i)
        v += kernel[i + radius] * tmp[std::clamp<int64_t>(y + i, 0, h - 1) * w + x];
      out[y * w + x] = v;
    }
  return out;
}

// Smooth noise in [-1, 1] (its largest magnitude is exactly 1).
std::vector<double> SmoothNoise(int64_t h, int64_t w, double sigma, std::mt19937_64& rng) {
  std::vector<double> field(h * w);
  for (double& v : field) v = Uniform(rng, -1, 1);
  field = Blur(field, h, w, sigma);
  double peak = 0;
  for (double v : field) peak = std::max(peak, std::abs(v));
  if (peak > 0)
    for (double& v : field) v /= peak;
  return field;
}

// Pulls every pixel from where the inverse map sends it (nearest neighbour; outside → 0).
template <typename InverseMap>
LabelMask Resample(const LabelMask& in, InverseMap&& inverse) {
  LabelMask out = in;
  for (int64_t y = 0; y < in.height; ++y)
    for (int64_t x = 0; x < in.width; ++x) {
      double sy, sx;
      inverse(double(y), double(x), &sy, &sx);
      const int64_t iy = std::lround(sy), ix = std::lround(sx);
      out.labels[y * in.width + x] = (iy < 0 || ix < 0 || iy >= in.height || ix >= in.width)
                                         ? 0
                                         : in.labels[iy * in.width + ix];
    }
  return out;
}

LabelMask Affine(const LabelMask& m, const NoiseParams& p, std::mt19937_64& rng) {
  const double s = Scale(m);
  auto sign = [&] { return Uniform(rng, 0, 1) < 0.5 ? -1.0 : 1.0; };
  const double ty = sign() * Ranged(rng, 5, 15, p.severity) * s;
  const double tx = sign() * Ranged(rng, 5, 15, p.severity) * s;
  const double angle = sign() * Ranged(rng, 5, 15, p.severity) * kPi / 180;
  const double zoom = 1 + sign() * Ranged(rng, 0, 0.15, p.severity);
  const double cy = (m.height - 1) / 2.0, cx = (m.width - 1) / 2.0;
  const double c = std::cos(angle), sn = std::sin(angle);
  // Forward: p' = zoom·R·(p − c) + c + t; the inverse undoes each step in reverse.
  return Resample(m, [&](double y, double x, double* sy, double* sx) {
    const double dy = (y - cy - ty) / zoom, dx = (x - cx - tx) / zoom;
    *sy = cy + c * dy - sn * dx;
    *sx = cx + sn * dy + c * dx;
  });
}

LabelMask Elastic(const LabelMask& m, const NoiseParams& p, std::mt19937_64& rng) {
  const double s = Scale(m);
  const double sigma = std::max(1.0, Uniform(rng, 4, 8) * s);
  const double alpha = Ranged(rng, 34, 100, p.severity) * s;
  // Uniform noise blurred by σ has a small spread; α (Simard et al. 2003) restores the size.
  std::vector<double> dy(m.size()), dx(m.size());
  for (double& v : dy) v = Uniform(rng, -1, 1);
  for (double& v : dx) v = Uniform(rng, -1, 1);
  dy = Blur(dy, m.height, m.width, sigma);
  dx = Blur(dx, m.height, m.width, sigma);
  return Resample(m, [&](double y, double x, double* sy, double* sx) {
    const int64_t i = static_cast<int64_t>(y) * m.width + static_cast<int64_t>(x);
    *sy = y + alpha * dy[i];
    *sx = x + alpha * dx[i];
  });
}

// Every structure's boundary moved by the same signed distance.
LabelMask Morph(const LabelMask& m, double offset) {
  LabelMask out = m;
  const std::vector<double> field(m.size(), offset);
  for (const Component& c : FindComponents(m)) DisplaceBoundary(&out, c, field, ParentLabel(m, c));
  return out;
}

}  // namespace

absl::StatusOr<BoundaryAmplitude> ParseBoundaryAmplitude(const std::string& name) {
  if (name == "relative") return BoundaryAmplitude::kRelative;
  if (name == "pixels") return BoundaryAmplitude::kPixels;
  return absl::InvalidArgumentError(
      absl::StrCat("boundary amplitude must be relative or pixels, got '", name, "'"));
}

const char* BoundaryAmplitudeName(BoundaryAmplitude amplitude) {
  return amplitude == BoundaryAmplitude::kPixels ? "pixels" : "relative";
}

namespace {

LabelMask Boundary(const LabelMask& m, const NoiseParams& p, std::mt19937_64& rng) {
  const double s = Scale(m);
  LabelMask out = m;
  const double sign = p.bias == NoiseBias::kShrink   ? -1.0
                      : p.bias == NoiseBias::kExpand ? 1.0
                      : (Uniform(rng, 0, 1) < 0.5 ? -1.0 : 1.0);
  const double field_sigma = std::max(1.5, 0.06 * std::min(m.height, m.width));
  for (const Component& c : FindComponents(m)) {
    const double d = MeasureDifficulty(c, m.height, m.width).difficulty;
    const double severity = std::clamp(p.severity, 0.0, 1.0);
    const double radius = std::sqrt(static_cast<double>(c.pixels.size()) / M_PI);
    const double amplitude =
        p.amplitude == BoundaryAmplitude::kRelative
            ? (kRelativeAmplitudeLo + (kRelativeAmplitudeHi - kRelativeAmplitudeLo) * d) * radius *
                  severity
            : (2 + (12 - 2) * d) * s * severity;
    const double bias = sign * Uniform(rng, 0, 0.5 * amplitude);
    std::vector<double> offset = SmoothNoise(m.height, m.width, field_sigma, rng);
    for (double& v : offset) v = amplitude * v + bias;
    DisplaceBoundary(&out, c, offset, ParentLabel(m, c));
  }
  return out;
}

// Picks each component with probability `p`, and at least one if there is any.
std::vector<const Component*> PickSome(const std::vector<Component>& all, double p,
                                       std::mt19937_64& rng) {
  std::vector<const Component*> picked;
  for (const Component& c : all)
    if (Uniform(rng, 0, 1) < p) picked.push_back(&c);
  if (picked.empty() && !all.empty())
    picked.push_back(&all[std::uniform_int_distribution<size_t>(0, all.size() - 1)(rng)]);
  return picked;
}

LabelMask Missing(const LabelMask& m, const NoiseParams& p, std::mt19937_64& rng) {
  LabelMask out = m;
  const std::vector<Component> all = FindComponents(m);
  for (const Component* c : PickSome(all, Ranged(rng, 0.1, 0.3, p.severity), rng)) {
    const int64_t parent = ParentLabel(m, *c);
    for (int64_t i : c->pixels) out.labels[i] = parent;
  }
  return out;
}

LabelMask Extra(const LabelMask& m, const NoiseParams& p, std::mt19937_64& rng) {
  LabelMask out = m;
  const int64_t blobs = std::uniform_int_distribution<int64_t>(1, 3)(rng);
  const double side = std::min(m.height, m.width);
  for (int64_t b = 0; b < blobs; ++b) {
    const int64_t label = std::uniform_int_distribution<int64_t>(1, p.num_classes - 1)(rng);
    const double ry = Ranged(rng, 0.04, 0.12, p.severity) * side;
    const double rx = ry * Uniform(rng, 0.6, 1.4);
    const double cy = Uniform(rng, 0, m.height - 1), cx = Uniform(rng, 0, m.width - 1);
    for (int64_t y = 0; y < m.height; ++y)
      for (int64_t x = 0; x < m.width; ++x) {
        const double u = (y - cy) / ry, v = (x - cx) / rx;
        int64_t& l = out.labels[y * m.width + x];
        if (u * u + v * v <= 1 && l < label) l = label;
      }
  }
  return out;
}

LabelMask Confusion(const LabelMask& m, const NoiseParams& p, std::mt19937_64& rng) {
  LabelMask out = m;
  const std::vector<Component> all = FindComponents(m);
  for (const Component* c : PickSome(all, Ranged(rng, 0.1, 0.3, p.severity), rng)) {
    int64_t to = c->label + (Uniform(rng, 0, 1) < 0.5 ? -1 : 1);
    if (to < 1) to = 2;
    if (to > p.num_classes - 1) to = p.num_classes - 2;
    if (to < 1 || to == c->label) continue;  // fewer than 3 classes: nothing to confuse with
    for (int64_t i : c->pixels) out.labels[i] = to;
  }
  return out;
}

// Convex hull (Andrew's monotone chain) of integer points; counter-clockwise.
std::vector<std::pair<int64_t, int64_t>> ConvexHull(std::vector<std::pair<int64_t, int64_t>> pts) {
  std::sort(pts.begin(), pts.end());
  pts.erase(std::unique(pts.begin(), pts.end()), pts.end());
  if (pts.size() < 3) return pts;
  auto cross = [](const auto& o, const auto& a, const auto& b) {
    return (a.first - o.first) * (b.second - o.second) - (a.second - o.second) * (b.first - o.first);
  };
  std::vector<std::pair<int64_t, int64_t>> hull(2 * pts.size());
  size_t k = 0;
  for (size_t i = 0; i < pts.size(); ++i) {
    while (k >= 2 && cross(hull[k - 2], hull[k - 1], pts[i]) <= 0) --k;
    hull[k++] = pts[i];
  }
  for (size_t i = pts.size() - 1, t = k + 1; i > 0; --i) {
    while (k >= t && cross(hull[k - 2], hull[k - 1], pts[i - 1]) <= 0) --k;
    hull[k++] = pts[i - 1];
  }
  hull.resize(k - 1);
  return hull;
}

}  // namespace

int64_t LabelMask::CountOf(int64_t label) const {
  return std::count(labels.begin(), labels.end(), label);
}

absl::StatusOr<NoiseModel> ParseNoiseModel(const std::string& name) {
  for (const ModelName& m : kModels)
    if (name == m.name) return m.model;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown noise model '", name, "'; expected one of ", NoiseModelNames()));
}

const char* NoiseModelName(NoiseModel model) {
  for (const ModelName& m : kModels)
    if (m.model == model) return m.name;
  return "?";
}

std::string NoiseModelNames() {
  std::string out;
  for (const ModelName& m : kModels) absl::StrAppend(&out, out.empty() ? "" : ", ", m.name);
  return out;
}

absl::StatusOr<NoiseBias> ParseNoiseBias(const std::string& name) {
  if (name == "mixed") return NoiseBias::kMixed;
  if (name == "shrink") return NoiseBias::kShrink;
  if (name == "expand") return NoiseBias::kExpand;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown bias '", name, "'; expected mixed, shrink or expand"));
}

const char* NoiseBiasName(NoiseBias bias) {
  return bias == NoiseBias::kShrink ? "shrink" : bias == NoiseBias::kExpand ? "expand" : "mixed";
}

LabelMask CorruptMask(const LabelMask& clean, NoiseModel model, const NoiseParams& params,
                      std::mt19937_64& rng) {
  const double s = Scale(clean);
  switch (model) {
    case NoiseModel::kErosion:
      return Morph(clean, -std::max(1.0, Ranged(rng, 3, 15, params.severity) * s));
    case NoiseModel::kDilation:
      return Morph(clean, std::max(1.0, Ranged(rng, 3, 15, params.severity) * s));
    case NoiseModel::kAffine:
      return Affine(clean, params, rng);
    case NoiseModel::kElastic:
      return Elastic(clean, params, rng);
    case NoiseModel::kBoundary:
      return Boundary(clean, params, rng);
    case NoiseModel::kMissing:
      return Missing(clean, params, rng);
    case NoiseModel::kExtra:
      return Extra(clean, params, rng);
    case NoiseModel::kConfusion:
      return Confusion(clean, params, rng);
  }
  return clean;
}

std::vector<Component> FindComponents(const LabelMask& mask) {
  const int64_t h = mask.height, w = mask.width;
  std::vector<uint8_t> seen(mask.size(), 0);
  std::vector<Component> out;
  std::vector<int64_t> stack;
  for (int64_t start = 0; start < mask.size(); ++start) {
    const int64_t label = mask.labels[start];
    if (label == 0 || seen[start]) continue;
    Component c;
    c.label = label;
    stack.assign(1, start);
    seen[start] = 1;
    while (!stack.empty()) {
      const int64_t i = stack.back();
      stack.pop_back();
      c.pixels.push_back(i);
      const int64_t y = i / w, x = i % w;
      for (int64_t dy = -1; dy <= 1; ++dy)
        for (int64_t dx = -1; dx <= 1; ++dx) {
          const int64_t ny = y + dy, nx = x + dx;
          if (ny < 0 || nx < 0 || ny >= h || nx >= w) continue;
          const int64_t j = ny * w + nx;
          if (!seen[j] && mask.labels[j] == label) {
            seen[j] = 1;
            stack.push_back(j);
          }
        }
    }
    std::sort(c.pixels.begin(), c.pixels.end());
    out.push_back(std::move(c));
  }
  // Lower labels first: a structure then grows over the ones it sits on, never the reverse.
  std::stable_sort(out.begin(), out.end(),
                   [](const Component& a, const Component& b) { return a.label < b.label; });
  return out;
}

int64_t ParentLabel(const LabelMask& mask, const Component& component) {
  const int64_t w = mask.width;
  std::map<int64_t, int64_t> counts;
  for (int64_t i : component.pixels) {
    const int64_t y = i / w, x = i % w;
    const int64_t around[4][2] = {{y - 1, x}, {y + 1, x}, {y, x - 1}, {y, x + 1}};
    for (const auto& [ny, nx] : around) {
      if (ny < 0 || nx < 0 || ny >= mask.height || nx >= w) continue;
      const int64_t l = mask.labels[ny * w + nx];
      if (l < component.label) ++counts[l];
    }
  }
  int64_t best = 0, best_count = -1;
  for (const auto& [label, count] : counts)
    if (count > best_count) best = label, best_count = count;
  return best;
}

void DisplaceBoundary(LabelMask* mask, const Component& component,
                      const std::vector<double>& offset, int64_t parent) {
  const int64_t n = mask->size();
  std::vector<uint8_t> inside(n, 0), outside(n, 1);
  for (int64_t i : component.pixels)
    if (mask->labels[i] == component.label) inside[i] = 1, outside[i] = 0;
  // Signed distance with the boundary half-way between pixels: a pixel one step outside is at
  // +0.5, the outermost pixel inside at −0.5. The new region is {signed distance ≤ offset}.
  const std::vector<double> to_inside = DistanceToFeatures(inside, mask->height, mask->width);
  const std::vector<double> to_outside = DistanceToFeatures(outside, mask->height, mask->width);
  for (int64_t i = 0; i < n; ++i) {
    const double signed_distance = inside[i] ? -(to_outside[i] - 0.5) : to_inside[i] - 0.5;
    const bool member = signed_distance <= offset[i];
    if (inside[i] && !member) mask->labels[i] = parent;
    if (!inside[i] && member && mask->labels[i] < component.label)
      mask->labels[i] = component.label;
  }
}

ShapeDifficulty MeasureDifficulty(const Component& component, int64_t height, int64_t width) {
  ShapeDifficulty d;
  const double area = static_cast<double>(component.pixels.size());
  if (area == 0) return d;
  std::vector<uint8_t> in(height * width, 0);
  for (int64_t i : component.pixels) in[i] = 1;
  // Perimeter: pixel edges between the region and the rest, times π/4 (a digital disc's edge
  // count overstates its true perimeter by 4/π).
  int64_t edges = 0;
  std::vector<std::pair<int64_t, int64_t>> corners;
  for (int64_t i : component.pixels) {
    const int64_t y = i / width, x = i % width;
    const bool up = y > 0 && in[i - width], down = y + 1 < height && in[i + width];
    const bool left = x > 0 && in[i - 1], right = x + 1 < width && in[i + 1];
    edges += !up + !down + !left + !right;
    if (!up || !down || !left || !right)
      for (int64_t cy : {y, y + 1})
        for (int64_t cx : {x, x + 1}) corners.push_back({cy, cx});
  }
  const double perimeter = edges * kPi / 4;
  const auto hull = ConvexHull(corners);
  double hull_area = 0, hull_perimeter = 0;
  for (size_t i = 0; i < hull.size(); ++i) {
    const auto& a = hull[i];
    const auto& b = hull[(i + 1) % hull.size()];
    hull_area += double(a.first) * b.second - double(b.first) * a.second;
    hull_perimeter += std::hypot(double(a.first - b.first), double(a.second - b.second));
  }
  hull_area = std::abs(hull_area) / 2;
  d.compactness = std::clamp(4 * kPi * area / (perimeter * perimeter), 0.0, 1.0);
  d.solidity = hull_area > 0 ? std::clamp(area / hull_area, 0.0, 1.0) : 1.0;
  d.roughness = perimeter > 0 ? std::clamp(1 - hull_perimeter / perimeter, 0.0, 1.0) : 0.0;
  // Below 5 % of the image a structure counts as small; a single pixel is as small as it gets.
  d.smallness = std::clamp(1 - area / (0.05 * height * width), 0.0, 1.0);
  d.difficulty = std::clamp(0.35 * (1 - d.compactness) + 0.35 * (1 - d.solidity) +
                                0.15 * d.roughness + 0.15 * d.smallness,
                            0.0, 1.0);
  return d;
}

}  // namespace splitfed::sim
