// The U-Net and its three-way split (front on the client, body on the coordinator, back on
// the client). See docs/ALGORITHM.md §2 for the cut and why skips never cross it.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace splitfed {

struct UNetConfig {
  int64_t in_channels = 1;
  int64_t num_classes = 4;
  int64_t base_width = 16;  // f: level i has f * 2^i channels
  int64_t depth = 4;        // number of down-steps; the bottleneck is level `depth`

  absl::Status Validate() const;
  int64_t Width(int64_t level) const { return base_width << level; }
};

// The network is a fixed sequence of units; a split cuts that sequence in three. For depth D
// the order is:
//   enc0.conv1 enc0.conv2 pool0 ... enc{D-1}.conv2 pool{D-1} enc{D}.conv1 enc{D}.conv2
//   up{D-1} dec{D-1}.conv1 dec{D-1}.conv2 ... up0 dec0.conv1 dec0.conv2 head
// enc{i}.conv2's output is the skip that dec{i}.conv1 concatenates with up{i}'s output.
enum class UnitKind { kEncoderConv, kPool, kUpConv, kDecoderConv, kHead };

struct UnitSpec {
  UnitKind kind;
  int64_t level;         // U-Net level the unit works at
  int conv_index;        // 1 or 2 for convolutions, 0 otherwise
  std::string name;      // parameter prefix, shared by the whole and the split models
  int64_t in_channels;
  int64_t out_channels;
};

std::vector<UnitSpec> UnitSequence(const UNetConfig& config);

// A split: the first `front_units` units run on the client, the last `back_units` on the
// client too, the rest (the body) on the coordinator.
struct SplitSpec {
  int64_t front_units = 0;
  int64_t back_units = 0;

  // "deep": the client keeps level 0 (enc0 + pool, and up0 + dec0 + head). Default.
  static SplitSpec Deep();
  // "shallow": the client keeps only the first conv and the 1x1 head.
  static SplitSpec Shallow();
  // Parses "deep", "shallow" or "F,B" (unit counts).
  static absl::StatusOr<SplitSpec> Parse(const std::string& text);

  // Checks the counts and that every skip connection stays on one side of the cut.
  absl::Status Validate(const UNetConfig& config) const;
  // The unit after the body's last: the body is units [front_units, BodyEnd(config)).
  int64_t BodyEnd(const UNetConfig& config) const;
};

// Shape (C, H, W) of the activation a1 the front sends, for an input of height x width;
// a2 and g2 have the shape the body returns, g1 that of a1.
struct ActivationShapes {
  std::vector<int64_t> a1;  // front output = body input
  std::vector<int64_t> a2;  // body output = back input
};
absl::StatusOr<ActivationShapes> CutShapes(const UNetConfig& config, const SplitSpec& split,
                                           int64_t height, int64_t width);

// True if the output of units [0, end) comes out of a ReLU, or out of a max-pool of a ReLU's
// output: its zero elements then have zero gradient whatever the gradient that arrives for
// them, so a cut there may send the gradient of the non-zero elements only (EncodeOnSupport in
// proto/tensor_codec.h). False for an `end` outside the network.
bool OutputIsRectified(const UNetConfig& config, int64_t end);

// Which activations of a split come out of a ReLU (OutputIsRectified at each cut).
struct RectifiedCuts {
  bool a1 = false;  // the front's output, sent by the site
  bool a2 = false;  // the body's output, sent by the coordinator
};
RectifiedCuts CutsRectified(const UNetConfig& config, const SplitSpec& split);

// Skip tensors by level; a level whose skip is not held here is undefined.
using SkipSet = std::vector<torch::Tensor>;

// A contiguous run of units [begin, end). The whole U-Net, the front, the body and the back
// are all segments, so their parameters carry the same names (e.g. "enc0_conv1.conv.weight").
class UNetSegmentImpl : public torch::nn::Module {
 public:
  UNetSegmentImpl(const UNetConfig& config, int64_t begin, int64_t end);

  // Runs the units on x. Skips produced here are stored into `skips`; skips consumed here are
  // read from it (they were produced here or, for the back, handed over from the front).
  torch::Tensor forward(torch::Tensor x, SkipSet& skips);
  // Convenience for a segment whose skips are all internal (the whole net, the body).
  torch::Tensor forward(torch::Tensor x);

  const UNetConfig& config() const { return config_; }
  int64_t begin() const { return begin_; }
  int64_t end() const { return end_; }

 private:
  UNetConfig config_;
  int64_t begin_;
  int64_t end_;
  std::vector<UnitSpec> units_;
  std::vector<torch::nn::Sequential> layers_;  // one per unit; empty for pool units
};
TORCH_MODULE(UNetSegment);

// The monolithic network: one segment over every unit.
UNetSegment MakeUNet(const UNetConfig& config);

struct SplitModel {
  UNetSegment front{nullptr};
  UNetSegment body{nullptr};
  UNetSegment back{nullptr};
};
SplitModel MakeSplitModel(const UNetConfig& config, const SplitSpec& split);

// Copies parameters and buffers by name from `from` into `to` (names that `to` lacks are
// ignored), e.g. the whole net's weights into one part of a split.
void CopyStateByName(const torch::nn::Module& from, torch::nn::Module& to);

}  // namespace splitfed
