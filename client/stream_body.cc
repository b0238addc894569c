#include "client/stream_body.h"

#include <torch/torch.h>

#include "status/status_macros.h"

namespace splitfed {
namespace {

// What an answer to `out` must be: float32, finite, `per_image` for each image of `out`.
DecodeLimits AnswerLimits(const v1::SplitMessage& out, const std::vector<int64_t>& per_image) {
  DecodeLimits limits;
  limits.expected_dtype = v1::DTYPE_FLOAT32;
  limits.reject_non_finite = true;
  std::vector<int64_t> shape = {out.tensor().shape_size() > 0 ? out.tensor().shape(0) : 0};
  shape.insert(shape.end(), per_image.begin(), per_image.end());
  limits.expected_shape = shape;
  return limits;
}

}  // namespace

StreamBody::StreamBody(Stream* stream, int64_t round, WireEncoding encoding,
                       const ActivationShapes& shapes, bool front_rectified)
    : stream_(stream),
      round_(round),
      encoding_(encoding),
      shapes_(shapes),
      codec_(front_rectified) {}

absl::StatusOr<torch::Tensor> StreamBody::Forward(const torch::Tensor& a1) {
  return Activation(v1::SplitMessage::ACTIVATION, a1);
}

absl::StatusOr<torch::Tensor> StreamBody::Backward(const torch::Tensor& g2) {
  v1::SplitMessage out;
  RETURN_IF_ERROR(codec_.EncodeGradient(g2, encoding_, out.mutable_tensor()));
  ASSIGN_OR_RETURN(v1::SplitMessage in, Exchange(v1::SplitMessage::GRADIENT, &out));
  return codec_.DecodeGradient(in.tensor(), AnswerLimits(out, shapes_.a1), "g1");
}

absl::StatusOr<torch::Tensor> StreamBody::Evaluate(const torch::Tensor& a1) {
  return Activation(v1::SplitMessage::EVAL, a1);
}

absl::StatusOr<torch::Tensor> StreamBody::Teacher(const torch::Tensor& a1) {
  return Activation(v1::SplitMessage::TEACHER, a1);
}

absl::StatusOr<torch::Tensor> StreamBody::Activation(v1::SplitMessage::Kind kind,
                                                     const torch::Tensor& a1) {
  const bool training = kind == v1::SplitMessage::ACTIVATION;
  v1::SplitMessage out;
  RETURN_IF_ERROR(codec_.EncodeActivation(a1, encoding_, training, out.mutable_tensor()));
  ASSIGN_OR_RETURN(v1::SplitMessage in, Exchange(kind, &out));
  return codec_.DecodeActivation(in.tensor(), AnswerLimits(out, shapes_.a2), "a2", training);
}

absl::StatusOr<v1::SplitMessage> StreamBody::Exchange(v1::SplitMessage::Kind kind,
                                                      v1::SplitMessage* out) {
  v1::SplitMessage in;
  out->set_kind(kind);
  out->set_round(round_);
  out->set_step(++step_);
  bytes_sent_ += out->ByteSizeLong();
  if (!stream_->Write(*out) || !stream_->Read(&in))
    return absl::UnavailableError("the split stream closed (the coordinator ended it)");
  bytes_received_ += in.ByteSizeLong();
  if (in.step() != step_ || in.kind() != kind)
    return absl::InternalError("the coordinator answered a different message");
  return in;
}

}  // namespace splitfed
