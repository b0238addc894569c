#include "split/unet.h"

#include <torch/torch.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "status/status_macros.h"

namespace splitfed {
namespace {

constexpr int64_t kMaxDepth = 6;

int64_t TotalUnits(int64_t depth) { return 6 * depth + 3; }

torch::nn::Sequential ConvBnRelu(int64_t in, int64_t out) {
  // No conv bias: BatchNorm's shift makes it redundant.
  return torch::nn::Sequential(
      {{"conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1).bias(false))},
       {"bn", torch::nn::BatchNorm2d(out)},
       {"relu", torch::nn::ReLU(torch::nn::ReLUOptions(true))}});
}

}  // namespace

absl::Status UNetConfig::Validate() const {
  if (in_channels < 1 || in_channels > 16)
    return absl::InvalidArgumentError(
        absl::StrCat("model.in_channels must be in [1, 16], got ", in_channels));
  if (num_classes < 2 || num_classes > 64)
    return absl::InvalidArgumentError(
        absl::StrCat("model.num_classes must be in [2, 64] (background counts), got ",
                     num_classes));
  if (base_width < 1 || base_width > 256)
    return absl::InvalidArgumentError(
        absl::StrCat("model.base_width must be in [1, 256], got ", base_width));
  if (depth < 1 || depth > kMaxDepth)
    return absl::InvalidArgumentError(
        absl::StrCat("model.depth must be in [1, ", kMaxDepth, "], got ", depth));
  return absl::OkStatus();
}

std::vector<UnitSpec> UnitSequence(const UNetConfig& c) {
  std::vector<UnitSpec> units;
  units.reserve(TotalUnits(c.depth));
  int64_t channels = c.in_channels;
  for (int64_t level = 0; level <= c.depth; ++level) {
    const int64_t w = c.Width(level);
    units.push_back({UnitKind::kEncoderConv, level, 1, absl::StrCat("enc", level, "_conv1"),
                     channels, w});
    units.push_back({UnitKind::kEncoderConv, level, 2, absl::StrCat("enc", level, "_conv2"), w, w});
    if (level < c.depth) units.push_back({UnitKind::kPool, level, 0, "", w, w});
    channels = w;
  }
  for (int64_t level = c.depth - 1; level >= 0; --level) {
    const int64_t w = c.Width(level);
    units.push_back({UnitKind::kUpConv, level, 0, absl::StrCat("up", level), 2 * w, w});
    units.push_back(
        {UnitKind::kDecoderConv, level, 1, absl::StrCat("dec", level, "_conv1"), 2 * w, w});
    units.push_back({UnitKind::kDecoderConv, level, 2, absl::StrCat("dec", level, "_conv2"), w, w});
  }
  units.push_back({UnitKind::kHead, 0, 0, "head", c.base_width, c.num_classes});
  return units;
}

SplitSpec SplitSpec::Deep() { return {3, 4}; }
SplitSpec SplitSpec::Shallow() { return {1, 1}; }

absl::StatusOr<SplitSpec> SplitSpec::Parse(const std::string& text) {
  if (text == "deep") return Deep();
  if (text == "shallow") return Shallow();
  std::vector<std::string> parts = absl::StrSplit(text, ',');
  SplitSpec spec;
  if (parts.size() == 2 && absl::SimpleAtoi(parts[0], &spec.front_units) &&
      absl::SimpleAtoi(parts[1], &spec.back_units))
    return spec;
  return absl::InvalidArgumentError(absl::StrCat(
      "split must be 'deep', 'shallow' or 'FRONT_UNITS,BACK_UNITS', got '", text, "'"));
}

int64_t SplitSpec::BodyEnd(const UNetConfig& config) const {
  return TotalUnits(config.depth) - back_units;
}

absl::Status SplitSpec::Validate(const UNetConfig& config) const {
  const int64_t total = TotalUnits(config.depth);
  if (front_units < 1 || back_units < 1 || front_units + back_units >= total)
    return absl::InvalidArgumentError(absl::StrCat(
        "split ", front_units, ",", back_units, " leaves an empty part: a U-Net of depth ",
        config.depth, " has ", total, " units and front, body and back need at least one each"));
  const std::vector<UnitSpec> units = UnitSequence(config);
  for (int64_t level = 0; level < config.depth; ++level) {
    int64_t source = -1, sink = -1;
    for (int64_t i = 0; i < total; ++i) {
      const UnitSpec& u = units[i];
      if (u.level != level || u.conv_index != 2 || u.kind != UnitKind::kEncoderConv) continue;
      source = i;
    }
    for (int64_t i = 0; i < total; ++i) {
      const UnitSpec& u = units[i];
      if (u.level == level && u.kind == UnitKind::kDecoderConv && u.conv_index == 1) sink = i;
    }
    const bool source_in_front = source < front_units;
    const bool source_in_back = source >= total - back_units;
    const bool sink_in_back = sink >= total - back_units;
    const bool sink_in_front = sink < front_units;
    const bool source_in_body = !source_in_front && !source_in_back;
    const bool sink_in_body = !sink_in_front && !sink_in_back;
    // A skip may join front to back (both on the client) or stay inside the body.
    const bool ok = (source_in_front && sink_in_back) || (source_in_body && sink_in_body);
    if (!ok)
      return absl::InvalidArgumentError(absl::StrCat(
          "split ", front_units, ",", back_units, " cuts the level-", level,
          " skip connection (", units[source].name, " -> ", units[sink].name,
          "): a skip must stay inside the body or join front to back"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ActivationShapes> CutShapes(const UNetConfig& config, const SplitSpec& split,
                                           int64_t height, int64_t width) {
  RETURN_IF_ERROR(config.Validate());
  RETURN_IF_ERROR(split.Validate(config));
  const int64_t stride = int64_t{1} << config.depth;
  if (height < stride || width < stride || height % stride || width % stride)
    return absl::InvalidArgumentError(absl::StrCat(
        "image size ", height, "x", width, " must be a positive multiple of ", stride,
        " (2^depth) so that every down-step halves it exactly"));
  const std::vector<UnitSpec> units = UnitSequence(config);
  // Shape after unit i: track the spatial level through pools and up-convs.
  auto shape_after = [&](int64_t count) {
    int64_t level = 0;
    for (int64_t i = 0; i < count; ++i) {
      if (units[i].kind == UnitKind::kPool) ++level;
      if (units[i].kind == UnitKind::kUpConv) --level;
    }
    return std::vector<int64_t>{units[count - 1].out_channels, height >> level, width >> level};
  };
  return ActivationShapes{shape_after(split.front_units), shape_after(split.BodyEnd(config))};
}

bool OutputIsRectified(const UNetConfig& config, int64_t end) {
  const std::vector<UnitSpec> units = UnitSequence(config);
  if (end < 1 || end > static_cast<int64_t>(units.size())) return false;
  switch (units[end - 1].kind) {
    case UnitKind::kEncoderConv:
    case UnitKind::kDecoderConv:
      return true;  // ConvBnRelu
    case UnitKind::kPool:
      // A max-pool's zero output comes from a window of zeros, whose gradient the ReLU
      // before it stops.
      return OutputIsRectified(config, end - 1);
    case UnitKind::kUpConv:
    case UnitKind::kHead:
      return false;
  }
  return false;
}

RectifiedCuts CutsRectified(const UNetConfig& config, const SplitSpec& split) {
  return RectifiedCuts{OutputIsRectified(config, split.front_units),
                       OutputIsRectified(config, split.BodyEnd(config))};
}

UNetSegmentImpl::UNetSegmentImpl(const UNetConfig& config, int64_t begin, int64_t end)
    : config_(config), begin_(begin), end_(end) {
  const std::vector<UnitSpec> all = UnitSequence(config);
  TORCH_CHECK(begin >= 0 && begin < end && end <= static_cast<int64_t>(all.size()),
              "bad U-Net segment [", begin, ", ", end, ")");
  units_.assign(all.begin() + begin, all.begin() + end);
  for (const UnitSpec& u : units_) {
    torch::nn::Sequential layer{nullptr};
    switch (u.kind) {
      case UnitKind::kEncoderConv:
      case UnitKind::kDecoderConv:
        layer = register_module(u.name, ConvBnRelu(u.in_channels, u.out_channels));
        break;
      case UnitKind::kUpConv:
        layer = register_module(
            u.name, torch::nn::Sequential({{"conv", torch::nn::ConvTranspose2d(
                                                        torch::nn::ConvTranspose2dOptions(
                                                            u.in_channels, u.out_channels, 2)
                                                            .stride(2))}}));
        break;
      case UnitKind::kHead:
        layer = register_module(
            u.name, torch::nn::Sequential({{"conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(
                                                        u.in_channels, u.out_channels, 1))}}));
        break;
      case UnitKind::kPool:
        break;
    }
    layers_.push_back(layer);
  }
}

torch::Tensor UNetSegmentImpl::forward(torch::Tensor x, SkipSet& skips) {
  if (static_cast<int64_t>(skips.size()) < config_.depth) skips.resize(config_.depth);
  for (size_t i = 0; i < units_.size(); ++i) {
    const UnitSpec& u = units_[i];
    switch (u.kind) {
      case UnitKind::kPool:
        x = torch::max_pool2d(x, 2);
        break;
      case UnitKind::kDecoderConv:
        if (u.conv_index == 1) {
          const torch::Tensor& skip = skips[u.level];
          TORCH_CHECK(skip.defined(), "U-Net segment has no skip for level ", u.level);
          x = torch::cat({skip, x}, 1);
        }
        x = layers_[i]->forward(x);
        break;
      default:
        x = layers_[i]->forward(x);
        if (u.kind == UnitKind::kEncoderConv && u.conv_index == 2 && u.level < config_.depth)
          skips[u.level] = x;
    }
  }
  return x;
}

torch::Tensor UNetSegmentImpl::forward(torch::Tensor x) {
  SkipSet skips;
  return forward(std::move(x), skips);
}

UNetSegment MakeUNet(const UNetConfig& config) {
  return UNetSegment(config, 0, TotalUnits(config.depth));
}

SplitModel MakeSplitModel(const UNetConfig& config, const SplitSpec& split) {
  const int64_t body_end = split.BodyEnd(config);
  return SplitModel{UNetSegment(config, 0, split.front_units),
                    UNetSegment(config, split.front_units, body_end),
                    UNetSegment(config, body_end, TotalUnits(config.depth))};
}

void CopyStateByName(const torch::nn::Module& from, torch::nn::Module& to) {
  torch::NoGradGuard no_grad;
  const auto source_params = from.named_parameters();
  for (auto& item : to.named_parameters())
    if (const torch::Tensor* src = source_params.find(item.key())) item.value().copy_(*src);
  const auto source_buffers = from.named_buffers();
  for (auto& item : to.named_buffers())
    if (const torch::Tensor* src = source_buffers.find(item.key())) item.value().copy_(*src);
}

}  // namespace splitfed
