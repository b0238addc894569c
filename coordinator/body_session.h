// The coordinator's end of one Split stream: one site's use of the body for one round. The
// Split service hands it each message and says when the answer has gone; the session keeps
// the order the coordinator needs (SFLV2's turn first; decoding, the body's work and encoding
// where the coordinator runs tensor work; the body's deferred optimiser step once the site
// has its g1). Transport-free, like the coordinator.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "proto/tensor_codec.h"
#include "splitfed/v1/federation.pb.h"

namespace splitfed {

class Coordinator;

class BodySession {
 public:
  BodySession(Coordinator* coordinator, std::string site);

  // One split message in, its answer out: a1 → a2 (ACTIVATION, EVAL, TEACHER) or g2 → g1
  // (GRADIENT). An error leaves the site out of the round; the caller ends the stream.
  absl::Status Answer(const v1::SplitMessage& in, v1::SplitMessage* out);
  // The last answer is on its way to the site. After a g1 the body's optimiser steps now,
  // overlapping the site's work on g1 (Coordinator::FinishBodyStep decides). Skipping this
  // call is safe: the body then takes the step first on its next message.
  absl::Status AnswerSent();

  int64_t round() const { return round_; }

 private:
  absl::Status AnswerOnTensorThread(const v1::SplitMessage& in, v1::SplitMessage* out);

  Coordinator* coordinator_;
  const std::string site_;
  SplitStepCodec codec_;  // carries a training step's sparse supports from a1/a2 to g2/g1
  int64_t round_ = 0;
  bool step_pending_ = false;
};

}  // namespace splitfed
