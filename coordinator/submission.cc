#include "coordinator/submission.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "proto/state_codec.h"

namespace splitfed {

absl::Status CheckSubmissionScalars(const std::string& site, const SiteSubmission& submission) {
  // The scalars weigh the site in some aggregation rules: nonsense is refused here, not there.
  auto in_range = [](double v, double lo, double hi) {
    return std::isfinite(v) && v >= lo && v <= hi;
  };
  // A training objective may be negative (SplitFed-CL's learned weights add ½·s terms); the
  // validation loss is a plain segmentation loss and weighs sites in QA-SplitFed.
  if (!in_range(submission.train_loss, -1e12, 1e12) ||
      !in_range(submission.validation_loss, 0, 1e12))
    return absl::InvalidArgumentError(absl::StrCat(
        "site '", site, "' reports losses ", submission.train_loss, " (training) and ",
        submission.validation_loss,
        " (validation); both must be finite and the validation loss >= 0"));
  if (!in_range(submission.validation_dice, 0, 1) || !in_range(submission.reliability, 0, 1) ||
      !in_range(submission.boundary_noise, 0, 1))
    return absl::InvalidArgumentError(absl::StrCat(
        "site '", site, "' reports validation Dice ", submission.validation_dice,
        ", reliability ", submission.reliability, " and boundary noise ",
        submission.boundary_noise, "; all must lie in [0, 1]"));
  if (!in_range(submission.teacher_loss, 0, 1e12))
    return absl::InvalidArgumentError(absl::StrCat("site '", site, "' reports teacher loss ",
                                                   submission.teacher_loss,
                                                   "; it must be finite and >= 0"));
  return absl::OkStatus();
}

absl::Status UpdateReader::Add(const v1::UpdateChunk& chunk) {
  if (!has_scalars_) {
    if (!chunk.has_scalars()) return absl::InvalidArgumentError("an update starts with its scalars");
    has_scalars_ = true;
    const v1::UpdateScalars& sc = chunk.scalars();
    submission_.round = sc.round();
    submission_.num_images = sc.num_images();
    submission_.train_loss = sc.train_loss();
    submission_.validation_loss = sc.validation_loss();
    submission_.validation_dice = sc.validation_dice();
    submission_.reliability = sc.reliability();
    submission_.teacher_loss = sc.teacher_loss();
    submission_.boundary_noise = sc.boundary_noise();
    return CheckSubmissionScalars(site_, submission_);
  }
  if (!chunk.has_state())
    return absl::InvalidArgumentError("after the scalars an update holds only state entries");
  return DecodeStateEntry(chunk.state(), &submission_.client_state);
}

absl::StatusOr<SiteSubmission> UpdateReader::Finish() && {
  if (!has_scalars_) return absl::InvalidArgumentError("an update starts with its scalars");
  return std::move(submission_);
}

}  // namespace splitfed
