// A Split stream as the coordinator's body session reads it: framed SplitMessages decoded by
// the same SplitStepCodec, whose supports carry from an activation to its gradient. Each
// decoded activation is answered the way the body would (a rectified tensor of its shape), so
// later gradients meet a real support. The first byte says whether a2 crosses rectified.
#include <torch/torch.h>

#include <cstddef>
#include <cstdint>

#include "fuzz/framing.h"
#include "proto/tensor_codec.h"
#include "splitfed/v1/federation.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using splitfed::v1::SplitMessage;
  if (size < 1) return 0;
  splitfed::SplitStepCodec codec(data[0] & 1);
  splitfed::DecodeLimits limits;
  limits.expected_dtype = splitfed::v1::DTYPE_FLOAT32;
  limits.reject_non_finite = true;
  limits.max_elements = 1 << 16;
  for (const std::string& frame : splitfed::fuzz::Frames(data + 1, size - 1)) {
    SplitMessage in;
    if (!in.ParseFromString(frame)) return 0;
    if (in.kind() == SplitMessage::GRADIENT) {
      if (!codec.DecodeGradient(in.tensor(), limits, "g2").ok()) return 0;
      continue;
    }
    const bool training = in.kind() == SplitMessage::ACTIVATION;
    absl::StatusOr<torch::Tensor> a1 = codec.DecodeActivation(in.tensor(), limits, "a1", training);
    if (!a1.ok()) return 0;
    splitfed::v1::Tensor reply;
    if (!codec.EncodeActivation(torch::relu(*a1), splitfed::WireEncoding::kFp32, training, &reply)
             .ok())
      return 0;
  }
  return 0;
}
