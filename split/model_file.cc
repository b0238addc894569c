#include "split/model_file.h"

#include <torch/torch.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "split/model_state.h"

namespace splitfed {
namespace {

constexpr int64_t kFormatVersion = 1;

}  // namespace

absl::Status SaveModelFile(const std::string& path, const UNetConfig& c, const SplitSpec& split,
                           int64_t image_height, int64_t image_width, SplitModel& model) {
  try {
    torch::serialize::OutputArchive archive;
    archive.write("meta", torch::tensor({kFormatVersion, c.in_channels, c.num_classes,
                                         c.base_width, c.depth, split.front_units,
                                         split.back_units, image_height, image_width}));
    for (const auto& [name, t] : SplitModelState(model)) archive.write(name, t);
    // Write to a temporary name and rename, so a crash never leaves half a model file.
    const std::string tmp = path + ".tmp";
    archive.save_to(tmp);
    std::filesystem::rename(tmp, path);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(path, ": cannot write the model file: ", e.what()));
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelFile> LoadModelFile(const std::string& path) {
  if (!std::filesystem::exists(path))
    return absl::NotFoundError(absl::StrCat(path, ": no such model file"));
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    torch::Tensor meta;
    if (!archive.try_read("meta", meta) || meta.numel() != 9 || meta.scalar_type() != torch::kLong)
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a SplitFed model file"));
    const auto m = meta.accessor<int64_t, 1>();
    if (m[0] != kFormatVersion)
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": model file format ", m[0], ", this build reads ", kFormatVersion));
    ModelFile file;
    file.config = {m[1], m[2], m[3], m[4]};
    file.split = {m[5], m[6]};
    file.image_height = m[7];
    file.image_width = m[8];
    if (auto s = CutShapes(file.config, file.split, file.image_height, file.image_width); !s.ok())
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", s.status().message()));
    file.model = MakeSplitModel(file.config, file.split);
    for (auto [prefix, part] : {std::pair{kFrontPrefix, file.model.front},
                                {kBodyPrefix, file.model.body}, {kBackPrefix, file.model.back}}) {
      NamedTensors state;
      for (const auto& [name, unused] : ExtractState(*part)) {
        torch::Tensor t;
        if (!archive.try_read(prefix + name, t))
          return absl::InvalidArgumentError(
              absl::StrCat(path, ": model file lacks ", prefix, name));
        state[name] = t;
      }
      if (auto s = LoadState(*part, state); !s.ok())
        return absl::InvalidArgumentError(absl::StrCat(path, ": ", s.message()));
    }
    return file;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": unreadable model file (", std::string(e.what()).substr(0, 200), ")"));
  }
}

}  // namespace splitfed
