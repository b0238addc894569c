#include "datasets/phantom.h"

#include <torch/torch.h>

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "status/status_macros.h"

namespace splitfed {
namespace {

constexpr double kPi = 3.14159265358979323846;

// Mixes (seed, index) into an independent stream seed (SplitMix64 finaliser).
uint64_t StreamSeed(uint64_t seed, uint64_t index) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ULL + index + 0x632BE59BD9B4E5EBULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

struct Rng {
  std::mt19937_64 engine;
  double Uniform(double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(engine);
  }
  torch::Tensor Normal(int64_t h, int64_t w) {
    std::normal_distribution<float> normal(0.f, 1.f);
    torch::Tensor t = torch::empty({h, w});
    float* p = t.data_ptr<float>();
    for (int64_t i = 0; i < h * w; ++i) p[i] = normal(engine);
    return t;
  }
};

// A star-shaped region around (cx, cy) with radii (rx, ry) and rotation `angle`, whose
// boundary radius is modulated by low harmonics: complexity 0 gives an ellipse, 1 a lobed,
// concave outline.
torch::Tensor StarShape(const torch::Tensor& xx, const torch::Tensor& yy, Rng& rng, double cx,
                        double cy, double rx, double ry, double complexity) {
  const double angle = rng.Uniform(0, kPi);
  const torch::Tensor dx = xx - cx, dy = yy - cy;
  const torch::Tensor u = (dx * std::cos(angle) + dy * std::sin(angle)) / rx;
  const torch::Tensor v = (-dx * std::sin(angle) + dy * std::cos(angle)) / ry;
  const torch::Tensor rho = torch::sqrt(u * u + v * v);
  const torch::Tensor phi = torch::atan2(v, u);
  torch::Tensor radius = torch::ones_like(phi);
  for (int k = 2; k <= 5; ++k) {
    const double amplitude = complexity * rng.Uniform(0.0, 0.28) / std::sqrt(k - 1.0);
    radius = radius + amplitude * torch::cos(k * phi + rng.Uniform(0, 2 * kPi));
  }
  return rho <= radius.clamp_min(0.35);
}

// Smooth random field in about [-1, 1]: coarse noise upsampled bilinearly.
torch::Tensor SmoothField(Rng& rng, int64_t h, int64_t w, int64_t grid) {
  torch::Tensor coarse = rng.Normal(grid, grid).view({1, 1, grid, grid});
  return torch::nn::functional::interpolate(
             coarse, torch::nn::functional::InterpolateFuncOptions()
                         .size(std::vector<int64_t>{h, w})
                         .mode(torch::kBilinear)
                         .align_corners(true))
      .view({h, w});
}

torch::Tensor GaussianBlur(const torch::Tensor& image, double sigma) {
  const int64_t radius = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(3 * sigma)));
  torch::Tensor x = torch::arange(-radius, radius + 1, torch::kFloat);
  torch::Tensor k = torch::exp(-(x * x) / (2 * sigma * sigma));
  k = k / k.sum();
  torch::Tensor img = image.view({1, 1, image.size(0), image.size(1)});
  img = torch::reflection_pad2d(img, {radius, radius, radius, radius});
  img = torch::conv2d(img, k.view({1, 1, 1, -1}));
  img = torch::conv2d(img, k.view({1, 1, -1, 1}));
  return img.view({image.size(0), image.size(1)});
}

// Size range (fraction of the half-width) and base intensity of each structure class.
struct StructureStyle {
  double min_radius, max_radius, intensity;
};
constexpr StructureStyle kStyles[] = {
    {0.32, 0.45, 0.62},  // 1: a large organ
    {0.18, 0.28, 0.85},  // 2: a bright, smaller organ
    {0.08, 0.14, 0.12},  // 3: a dark lesion, usually inside organ 1
    {0.12, 0.20, 0.45},  // 4
    {0.10, 0.16, 0.95},  // 5
};

}  // namespace

absl::Status PhantomOptions::Validate() const {
  if (count < 1) return absl::InvalidArgumentError("phantom count must be at least 1");
  if (height < 16 || width < 16 || height > 2048 || width > 2048)
    return absl::InvalidArgumentError(
        absl::StrCat("phantom size must be within 16..2048 pixels, got ", height, "x", width));
  if (num_classes < 2 || num_classes > 6)
    return absl::InvalidArgumentError(
        absl::StrCat("phantom num_classes must be in [2, 6], got ", num_classes));
  if (noise_sigma < 0 || appearance.gamma <= 0 || appearance.contrast <= 0 ||
      appearance.blur_sigma < 0)
    return absl::InvalidArgumentError(
        "phantom noise_sigma and blur_sigma must be >= 0, gamma and contrast > 0");
  return absl::OkStatus();
}

torch::Tensor ApplyAppearance(const torch::Tensor& image, const ScannerAppearance& a) {
  torch::Tensor out = image;
  if (a.gamma != 1.0) out = out.clamp(0, 1).pow(a.gamma);
  if (a.contrast != 1.0) out = ((out - out.mean()) * a.contrast + out.mean()).clamp(0, 1);
  if (a.blur_sigma > 0) out = GaussianBlur(out, a.blur_sigma);
  return out;
}

absl::StatusOr<SegmentationSet> GeneratePhantoms(const PhantomOptions& o) {
  RETURN_IF_ERROR(o.Validate());
  const int64_t h = o.height, w = o.width;
  torch::Tensor images = torch::empty({o.count, 1, h, w});
  torch::Tensor masks = torch::empty({o.count, h, w}, torch::kLong);
  const torch::Tensor ys = torch::linspace(-1, 1, h, torch::kFloat);
  const torch::Tensor xs = torch::linspace(-1, 1, w, torch::kFloat);
  const std::vector<torch::Tensor> grid = torch::meshgrid({ys, xs}, "ij");
  const torch::Tensor& yy = grid[0];
  const torch::Tensor& xx = grid[1];
  SegmentationSet set;
  set.num_classes = o.num_classes;

  for (int64_t i = 0; i < o.count; ++i) {
    Rng rng{std::mt19937_64(StreamSeed(o.seed, static_cast<uint64_t>(i)))};
    torch::Tensor mask = torch::zeros({h, w}, torch::kLong);
    // The body: a large ellipse of soft tissue on a dark field (still background, class 0).
    const torch::Tensor body =
        StarShape(xx, yy, rng, rng.Uniform(-0.05, 0.05), rng.Uniform(-0.05, 0.05),
                  rng.Uniform(0.78, 0.92), rng.Uniform(0.70, 0.90), rng.Uniform(0.0, 0.3));
    torch::Tensor image = torch::full({h, w}, 0.04f) + 0.26f * body.to(torch::kFloat);
    image = image + 0.05f * SmoothField(rng, h, w, 6) * body;
    double organ_cx = 0, organ_cy = 0, organ_r = 0.4;
    for (int64_t c = 1; c < o.num_classes; ++c) {
      const StructureStyle& style = kStyles[c - 1];
      const double r = rng.Uniform(style.min_radius, style.max_radius);
      double cx, cy;
      if (c == 3) {  // lesions sit inside the first organ
        cx = organ_cx + rng.Uniform(-0.4, 0.4) * organ_r;
        cy = organ_cy + rng.Uniform(-0.4, 0.4) * organ_r;
      } else {
        cx = rng.Uniform(-0.55, 0.55);
        cy = rng.Uniform(-0.55, 0.55);
      }
      if (c == 1) organ_cx = cx, organ_cy = cy, organ_r = r;
      const double complexity = rng.Uniform(0.0, 1.0);
      const torch::Tensor region = StarShape(xx, yy, rng, cx, cy, r * rng.Uniform(0.8, 1.2),
                                             r * rng.Uniform(0.8, 1.2), complexity) &
                                   body;
      mask.masked_fill_(region, c);
      const double level = style.intensity + rng.Uniform(-0.05, 0.05);
      const torch::Tensor texture = level + 0.06 * SmoothField(rng, h, w, 10);
      image = torch::where(region, texture, image);
    }
    image = image + static_cast<float>(o.noise_sigma) * rng.Normal(h, w);
    image = image.clamp(0.0, 1.0);
    image = ApplyAppearance(image, o.appearance);
    images[i][0].copy_(image);
    masks[i].copy_(mask);
    set.names.push_back(absl::StrCat("phantom_", o.seed, "_", i));
  }
  set.images = o.standardize ? StandardizePerImage(images) : images;
  set.masks = masks;
  return set;
}

}  // namespace splitfed
