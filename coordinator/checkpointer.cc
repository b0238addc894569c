#include "coordinator/checkpointer.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "split/model_file.h"
#include "status/status_macros.h"

namespace splitfed {
namespace {

constexpr int64_t kResumeFormat = 1;
constexpr char kResumeMeta[] = "splitfed.resume_meta";  // [format, round]

std::string ResumeFileName(int64_t round) { return absl::StrCat("round-", round, ".state"); }

// fsync on a path (a file, or a folder so that a rename in it is durable).
absl::Status SyncPath(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return absl::InternalError(absl::StrCat(path, ": cannot open to flush"));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return absl::InternalError(absl::StrCat(path, ": fsync failed"));
  return absl::OkStatus();
}

absl::StatusOr<std::string> FileSha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  char buffer[1 << 16];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0)
    EVP_DigestUpdate(ctx, buffer, static_cast<size_t>(in.gcount()));
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_DigestFinal_ex(ctx, digest, &size);
  EVP_MD_CTX_free(ctx);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), size));
}

}  // namespace

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

absl::StatusOr<Checkpointer::SavedState> Checkpointer::SaveResumeState(
    int64_t round, const NamedTensors& state) const {
  if (folder_.empty()) return SavedState();
  namespace fs = std::filesystem;
  const fs::path folder = fs::path(folder_) / "resume";
  std::error_code ec;
  fs::create_directories(folder, ec);
  if (ec)
    return absl::PermissionDeniedError(
        absl::StrCat(folder.string(), ": cannot create the resume folder: ", ec.message()));
  const std::string path = (folder / ResumeFileName(round)).string();
  const std::string tmp = path + ".tmp";
  try {
    torch::serialize::OutputArchive archive;
    archive.write(kResumeMeta, torch::tensor({kResumeFormat, round}));
    for (const auto& [name, t] : state) archive.write(name, t);
    archive.save_to(tmp);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(tmp, ": cannot write the resume state: ", e.what()));
  }
  // On disk before it is named, and named before the run store points at it.
  RETURN_IF_ERROR(SyncPath(tmp));
  fs::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat(path, ": cannot rename: ", ec.message()));
  RETURN_IF_ERROR(SyncPath(folder.string()));
  SavedState saved;
  saved.path = path;
  ASSIGN_OR_RETURN(saved.sha256, FileSha256(path));
  // The store may still name the previous round's file until this round's row commits.
  for (const auto& entry : fs::directory_iterator(folder, ec)) {
    const std::string name = entry.path().filename().string();
    if (name != ResumeFileName(round) && name != ResumeFileName(round - 1))
      fs::remove(entry.path(), ec);
  }
  return saved;
}

absl::StatusOr<NamedTensors> Checkpointer::LoadResumeState(const std::string& path,
                                                           const std::string& sha256,
                                                           int64_t round) {
  auto lost = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat(
        path, ": ", why, ". The run cannot resume from round ", round,
        "; restore the checkpoint folder from a backup, or start a new run with --new-run"));
  };
  if (!std::filesystem::exists(path)) return lost("the resume state is missing");
  ASSIGN_OR_RETURN(const std::string actual, FileSha256(path));
  if (actual != sha256)
    return lost(absl::StrCat("the resume state is corrupt (SHA-256 ", actual.substr(0, 12),
                             "..., the run store recorded ", sha256.substr(0, 12), "...)"));
  NamedTensors state;
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    torch::Tensor meta;
    if (!archive.try_read(kResumeMeta, meta) || meta.numel() != 2 ||
        meta.scalar_type() != torch::kLong)
      return lost("not a SplitFed resume state");
    if (meta[0].item<int64_t>() != kResumeFormat || meta[1].item<int64_t>() != round)
      return lost(absl::StrCat("holds format ", meta[0].item<int64_t>(), " round ",
                               meta[1].item<int64_t>()));
    for (const std::string& key : archive.keys()) {
      if (key == kResumeMeta) continue;
      torch::Tensor t;
      archive.read(key, t);
      state[key] = t;
    }
  } catch (const std::exception& e) {
    return lost(absl::StrCat("unreadable (", std::string(e.what()).substr(0, 200), ")"));
  }
  return state;
}

absl::StatusOr<std::string> Checkpointer::Save(const std::string& name, SplitModel& model) const {
  if (folder_.empty()) return std::string();
  const std::string path = (std::filesystem::path(folder_) / name).string();
  RETURN_IF_ERROR(SaveModelFile(path, model_, split_, image_size_, image_size_, model));
  return path;
}

}  // namespace splitfed
