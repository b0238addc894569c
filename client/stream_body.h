// The site's end of one Split stream: the coordinator's body as the BodyLink the site's
// trainer calls (a1 → a2 for training, evaluation and the teacher; g2 → g1). Activations that
// come out of a ReLU travel without their zeros, and so do their gradients (docs/PROTOCOL.md,
// "Sparse layouts"): a1 when `front_rectified`, a2 whenever the coordinator sends it so.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <vector>

#include "proto/tensor_codec.h"
#include "split/trainer.h"
#include "split/unet.h"
#include "splitfed/v1/federation.grpc.pb.h"

namespace splitfed {

class StreamBody : public BodyLink {
 public:
  using Stream = grpc::ClientReaderWriter<v1::SplitMessage, v1::SplitMessage>;
  StreamBody(Stream* stream, int64_t round, WireEncoding encoding,
             const ActivationShapes& shapes, bool front_rectified);

  absl::StatusOr<torch::Tensor> Forward(const torch::Tensor& a1) override;
  absl::StatusOr<torch::Tensor> Backward(const torch::Tensor& g2) override;
  absl::StatusOr<torch::Tensor> Evaluate(const torch::Tensor& a1) override;
  absl::StatusOr<torch::Tensor> Teacher(const torch::Tensor& a1) override;
  int64_t bytes_sent() const { return bytes_sent_; }
  int64_t bytes_received() const { return bytes_received_; }

 private:
  // a1 out, a2 back; only ACTIVATION is answered by a gradient later.
  absl::StatusOr<torch::Tensor> Activation(v1::SplitMessage::Kind kind, const torch::Tensor& a1);
  // Sends `out` (its tensor already encoded) and returns the coordinator's answer.
  absl::StatusOr<v1::SplitMessage> Exchange(v1::SplitMessage::Kind kind, v1::SplitMessage* out);

  Stream* stream_;
  int64_t round_;
  WireEncoding encoding_;
  ActivationShapes shapes_;
  SplitStepCodec codec_;
  int64_t step_ = 0;
  int64_t bytes_sent_ = 0;
  int64_t bytes_received_ = 0;
};

}  // namespace splitfed
