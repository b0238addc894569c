#include "datasets/segmentation_set.h"

#include <torch/torch.h>

namespace splitfed {

SegmentationSet SegmentationSet::Subset(const torch::Tensor& indices) const {
  SegmentationSet out;
  out.images = images.index_select(0, indices);
  out.masks = masks.index_select(0, indices);
  out.num_classes = num_classes;
  const auto idx = indices.contiguous();
  for (int64_t i = 0; i < idx.numel(); ++i) out.names.push_back(names.at(idx[i].item<int64_t>()));
  return out;
}

torch::Tensor StandardizePerImage(const torch::Tensor& images) {
  const torch::Tensor mean = images.mean({2, 3}, true);
  const torch::Tensor std = images.std({2, 3}, false, true);
  return (images - mean) / std.clamp_min(1e-6);
}

}  // namespace splitfed
