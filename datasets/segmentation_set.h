// An in-memory set of images and masks, the unit every loader produces.
#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

namespace splitfed {

struct SegmentationSet {
  torch::Tensor images;  // N×C×H×W float32
  torch::Tensor masks;   // N×H×W int64 class indices in [0, num_classes)
  std::vector<std::string> names;
  int64_t num_classes = 0;

  int64_t size() const { return images.defined() ? images.size(0) : 0; }
  // The images and masks at `indices` (a 1-D int64 tensor), names included.
  SegmentationSet Subset(const torch::Tensor& indices) const;
};

// Zero mean, unit standard deviation per image and channel (a flat image stays at zero).
torch::Tensor StandardizePerImage(const torch::Tensor& images);

}  // namespace splitfed
