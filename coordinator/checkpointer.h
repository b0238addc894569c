// The coordinator's files, in one folder: round-N.pt after each completed round (unless only
// the final model is kept), final.pt at the end, and resume/round-N.state, the state a
// restarted coordinator resumes from (the last two are kept). Without a folder nothing is
// written and a run cannot be resumed.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "split/model_state.h"
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

  // The coordinator's state after `round` (every tensor it resumes from, by name), written
  // to a temporary file, flushed to disk and renamed; older resume files but the previous one
  // are removed. Without a folder nothing is written and the result is empty.
  struct SavedState {
    std::string path;
    std::string sha256;  // hex, of the file as written
  };
  absl::StatusOr<SavedState> SaveResumeState(int64_t round, const NamedTensors& state) const;
  // Reads a resume file back; DATA_LOSS when it is missing, its checksum differs from
  // `sha256` or it is not the state of `round`.
  static absl::StatusOr<NamedTensors> LoadResumeState(const std::string& path,
                                                      const std::string& sha256, int64_t round);

 private:
  absl::StatusOr<std::string> Save(const std::string& name, SplitModel& model) const;

  std::string folder_;
  bool every_round_ = false;
  UNetConfig model_;
  SplitSpec split_;
  int64_t image_size_ = 0;
};

}  // namespace splitfed
