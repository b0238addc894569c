#include "coordinator/body_session.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "coordinator/coordinator.h"
#include "status/status_macros.h"

namespace splitfed {

BodySession::BodySession(Coordinator* coordinator, std::string site)
    : coordinator_(coordinator),
      site_(std::move(site)),
      // a2 travels without its zeros when it comes out of a ReLU (split/unet.h).
      codec_(CutsRectified(coordinator->options().model, coordinator->options().split).a2) {}

absl::Status BodySession::Answer(const v1::SplitMessage& in, v1::SplitMessage* out) {
  round_ = in.round();
  step_pending_ = false;
  // SFLV2: wait for the shared body's turn before queueing any tensor work, which must not be
  // held up by a site that is not yet due.
  RETURN_IF_ERROR(coordinator_->WaitForTurn(site_, round_));
  absl::Status answered;
  RETURN_IF_ERROR(
      coordinator_->RunTensorWork(round_, [&] { answered = AnswerOnTensorThread(in, out); }));
  RETURN_IF_ERROR(answered);
  step_pending_ = in.kind() == v1::SplitMessage::GRADIENT;
  return absl::OkStatus();
}

absl::Status BodySession::AnswerSent() {
  if (!step_pending_) return absl::OkStatus();
  step_pending_ = false;
  return coordinator_->FinishBodyStep(site_, round_);
}

absl::Status BodySession::AnswerOnTensorThread(const v1::SplitMessage& in,
                                               v1::SplitMessage* out) {
  const bool gradient = in.kind() == v1::SplitMessage::GRADIENT;
  const bool training = in.kind() == v1::SplitMessage::ACTIVATION;
  DecodeLimits limits;
  limits.expected_dtype = v1::DTYPE_FLOAT32;
  limits.reject_non_finite = true;
  ASSIGN_OR_RETURN(torch::Tensor t,
                   gradient ? codec_.DecodeGradient(in.tensor(), limits, "g2")
                            : codec_.DecodeActivation(in.tensor(), limits, "a1", training));
  absl::StatusOr<torch::Tensor> reply;
  switch (in.kind()) {
    case v1::SplitMessage::ACTIVATION:
      reply = coordinator_->Forward(site_, round_, t);
      break;
    case v1::SplitMessage::GRADIENT:
      reply = coordinator_->Backward(site_, round_, t);
      break;
    case v1::SplitMessage::EVAL:
      reply = coordinator_->Evaluate(site_, round_, t);
      break;
    case v1::SplitMessage::TEACHER:
      reply = coordinator_->Teacher(site_, round_, t);
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown split message kind ", static_cast<int>(in.kind())));
  }
  RETURN_IF_ERROR(reply.status());
  out->Clear();
  out->set_kind(in.kind());
  out->set_round(round_);
  out->set_step(in.step());
  const WireEncoding encoding = FromWire(in.tensor().encoding());
  return gradient ? codec_.EncodeGradient(*reply, encoding, out->mutable_tensor())
                  : codec_.EncodeActivation(*reply, encoding, training, out->mutable_tensor());
}

}  // namespace splitfed
