// The model file: a whole split model with what is needed to rebuild it, in one torch::save
// archive. Written by the coordinator each round and at the end; read by `splitfed segment`.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "split/unet.h"

namespace splitfed {

struct ModelFile {
  UNetConfig config;
  SplitSpec split;
  int64_t image_height = 0;
  int64_t image_width = 0;
  SplitModel model;
};

absl::Status SaveModelFile(const std::string& path, const UNetConfig& config,
                           const SplitSpec& split, int64_t image_height, int64_t image_width,
                           SplitModel& model);
absl::StatusOr<ModelFile> LoadModelFile(const std::string& path);

}  // namespace splitfed
