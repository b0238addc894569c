// Generated "phantom" scans: the built-in dataset, so everything runs with no download.
// Each image has a background body outline and num_classes-1 organ-like structures, from
// smooth ellipses to lobed, concave shapes, with per-class texture and scanner noise.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "datasets/segmentation_set.h"

namespace splitfed {

// How one site's scanner renders intensities: applied to the clean [0, 1] image.
struct ScannerAppearance {
  double gamma = 1.0;       // intensity^gamma
  double contrast = 1.0;    // scales around the image mean
  double blur_sigma = 0.0;  // Gaussian blur in pixels (0 = none)
};

// Renders an H×W image in [0, 1] as that scanner would (gamma, then contrast, then blur).
torch::Tensor ApplyAppearance(const torch::Tensor& image, const ScannerAppearance& appearance);

struct PhantomOptions {
  int64_t count = 64;
  int64_t height = 64;
  int64_t width = 64;
  int64_t num_classes = 4;  // background + 3 structures; 2..6
  uint64_t seed = 1;
  double noise_sigma = 0.06;  // additive Gaussian noise on the [0, 1] image
  ScannerAppearance appearance;
  bool standardize = true;  // zero mean, unit std per image

  absl::Status Validate() const;
};

// Image i depends only on (seed, i): the same options give the same set, and a larger count
// extends a smaller one.
absl::StatusOr<SegmentationSet> GeneratePhantoms(const PhantomOptions& options);

}  // namespace splitfed
