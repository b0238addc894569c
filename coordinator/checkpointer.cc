#include "coordinator/checkpointer.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "split/model_file.h"
#include "status/status_macros.h"

namespace splitfed {

absl::StatusOr<Checkpointer> Checkpointer::Create(const std::string& folder, bool every_round,
                                                  const UNetConfig& model,
                                                  const SplitSpec& split, int64_t image_size) {
  Checkpointer c;
  if (folder.empty()) return c;
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  if (ec)
    return absl::PermissionDeniedError(
        absl::StrCat(folder, ": cannot create the checkpoint folder: ", ec.message()));
  c.folder_ = folder;
  c.every_round_ = every_round;
  c.model_ = model;
  c.split_ = split;
  c.image_size_ = image_size;
  return c;
}

absl::StatusOr<std::string> Checkpointer::SaveRound(int64_t round, SplitModel& model) const {
  if (!every_round_) return std::string();
  return Save(absl::StrCat("round-", round, ".pt"), model);
}

absl::StatusOr<std::string> Checkpointer::SaveFinal(SplitModel& model) const {
  return Save("final.pt", model);
}

absl::StatusOr<std::string> Checkpointer::Save(const std::string& name, SplitModel& model) const {
  if (folder_.empty()) return std::string();
  const std::string path = (std::filesystem::path(folder_) / name).string();
  RETURN_IF_ERROR(SaveModelFile(path, model_, split_, image_size_, image_size_, model));
  return path;
}

}  // namespace splitfed
