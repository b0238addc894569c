// What a site hands in at the end of its round, and how it is read off the SubmitUpdate
// stream: the scalars first, then the client parts one state entry per message, each checked
// as it arrives. Kept apart from the coordinator so that the fuzz target reads updates with
// exactly the code the server runs.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "split/model_state.h"
#include "splitfed/v1/federation.pb.h"

namespace splitfed {

struct SiteSubmission {
  int64_t round = 0;
  int64_t num_images = 0;
  double train_loss = 0;
  double validation_loss = 0;
  double validation_dice = 0;
  double reliability = 1.0;
  double teacher_loss = 0;    // FedNoRo's noise statistic
  double boundary_noise = 0;  // FedA3I's noise statistic
  NamedTensors client_state;  // prefixed like RoundTicket::client_state
  int64_t bytes_in = 0;
};

// Losses finite (the validation loss >= 0), validation Dice, reliability and boundary noise in
// [0, 1]; the error names the site.
absl::Status CheckSubmissionScalars(const std::string& site, const SiteSubmission& submission);

// Reads one SubmitUpdate stream. Add() refuses a stream that does not open with valid scalars,
// a later message that is not a state entry, and a malformed, non-finite or repeated entry.
class UpdateReader {
 public:
  explicit UpdateReader(std::string site) : site_(std::move(site)) {}

  absl::Status Add(const v1::UpdateChunk& chunk);
  // The whole update, once the stream has ended.
  absl::StatusOr<SiteSubmission> Finish() &&;
  bool has_scalars() const { return has_scalars_; }
  int64_t round() const { return submission_.round; }

 private:
  std::string site_;
  SiteSubmission submission_;
  bool has_scalars_ = false;
};

}  // namespace splitfed
