// A dataset stored as files: ROOT/images/NAME.png and ROOT/<masks_dir>/NAME.png.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "datasets/segmentation_set.h"

namespace splitfed {

struct FolderDatasetOptions {
  std::string root;
  std::string masks_dir = "masks";  // relative to root, e.g. "annotators/expert1"
  int64_t height = 128;             // every image is resized to this size
  int64_t width = 128;
  int64_t channels = 1;     // 1: colour images become grey; 3: grey images are replicated
  int64_t num_classes = 2;  // mask values must lie in [0, num_classes)
  bool standardize = true;  // zero mean, unit std per image

  absl::Status Validate() const;
};

// Loads every images/*.png with its mask. PNG 8- or 16-bit, grey or colour (a colour mask
// must have equal channels). Images are resized bilinearly, masks by nearest neighbour.
// Any bad file (unreadable, missing mask, size mismatch, class out of range) is an error that
// names it; nothing is silently skipped.
absl::StatusOr<SegmentationSet> LoadFolderDataset(const FolderDatasetOptions& options);

struct PngPixels;
// A decoded PNG as a C×H×W float image in [0, 1] with `channels` channels (colour becomes
// grey by BT.601 luma, grey is replicated, alpha is dropped); `path` names it in errors.
absl::StatusOr<torch::Tensor> PngToImageTensor(const PngPixels& png, int64_t channels,
                                               const std::string& path);

}  // namespace splitfed
