// The coordinator's model files, in one folder: round-N.pt after each completed round (unless
// only the final model is kept) and final.pt at the end. Without a folder nothing is written.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "split/unet.h"

namespace splitfed {

class Checkpointer {
 public:
  Checkpointer() = default;  // writes nothing
  // Creates `folder` if needed (PERMISSION_DENIED when it cannot).
  static absl::StatusOr<Checkpointer> Create(const std::string& folder, bool every_round,
                                             const UNetConfig& model, const SplitSpec& split,
                                             int64_t image_size);

  // The round's model when every round is kept; returns its path, or "" when not kept.
  absl::StatusOr<std::string> SaveRound(int64_t round, SplitModel& model) const;
  // final.pt; returns its path, or "" without a folder.
  absl::StatusOr<std::string> SaveFinal(SplitModel& model) const;

 private:
  absl::StatusOr<std::string> Save(const std::string& name, SplitModel& model) const;

  std::string folder_;
  bool every_round_ = false;
  UNetConfig model_;
  SplitSpec split_;
  int64_t image_size_ = 0;
};

}  // namespace splitfed
