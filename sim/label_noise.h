// Label-noise models for the simulator (docs/ALGORITHM.md §7): the ways an annotator's mask
// can differ from the truth. Torch-free: masks here are plain label images, so the models are
// tested on hand-made shapes in milliseconds.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace splitfed::sim {

// A label image: row-major class indices, 0 = background.
struct LabelMask {
  int64_t height = 0;
  int64_t width = 0;
  std::vector<int64_t> labels;

  int64_t size() const { return height * width; }
  int64_t CountOf(int64_t label) const;
};

enum class NoiseModel {
  kErosion,    // every structure shrinks by a disc of radius r
  kDilation,   // every structure grows by a disc of radius r
  kAffine,     // the mask alone is translated, rotated and scaled
  kElastic,    // the mask alone is warped by a smooth random displacement field
  kBoundary,   // difficulty-guided: harder shapes get larger, smooth boundary errors
  kMissing,    // structures left unlabelled
  kExtra,      // spurious blobs labelled
  kConfusion,  // a structure given a neighbouring class
};
absl::StatusOr<NoiseModel> ParseNoiseModel(const std::string& name);
const char* NoiseModelName(NoiseModel model);
// All model names, for help texts and error messages.
std::string NoiseModelNames();

// Which way boundary errors lean: one annotator tends to draw tight, another generous.
enum class NoiseBias { kMixed, kShrink, kExpand };
absl::StatusOr<NoiseBias> ParseNoiseBias(const std::string& name);
const char* NoiseBiasName(NoiseBias bias);

enum class BoundaryAmplitude { kRelative, kPixels };
absl::StatusOr<BoundaryAmplitude> ParseBoundaryAmplitude(const std::string& name);
const char* BoundaryAmplitudeName(BoundaryAmplitude amplitude);  // relative | pixels
// Relative amplitude: A_d = severity·(kLo + (kHi − kLo)·d)·√(A/π) for difficulty d.
constexpr double kRelativeAmplitudeLo = 0.6, kRelativeAmplitudeHi = 1.2;

struct NoiseParams {
  // 0..1: how much of each model's range (ALGORITHM.md §7, given for 256² images and scaled
  // to the mask's size) is used. 1 = the whole range.
  double severity = 1.0;
  NoiseBias bias = NoiseBias::kMixed;  // used by the boundary model
  int64_t num_classes = 2;             // class confusion needs at least 3
  // The boundary model's amplitude: a share of each structure's equivalent radius √(A/π)
  // (relative, [ours]: the same damage at every image size), or the recipe's 2–12 px at 256²
  // scaled to the image (pixels: at 64² and below it barely changes a mask).
  BoundaryAmplitude amplitude = BoundaryAmplitude::kRelative;
};

// Returns a corrupted copy of `clean`: same size, labels in [0, num_classes). Deterministic
// given the state of `rng`.
LabelMask CorruptMask(const LabelMask& clean, NoiseModel model, const NoiseParams& params,
                      std::mt19937_64& rng);

// ---- building blocks, public for the tests ----

// One 8-connected region of one foreground label.
struct Component {
  int64_t label = 0;
  std::vector<int64_t> pixels;  // row-major indices
};
std::vector<Component> FindComponents(const LabelMask& mask);

// The label a structure sits on (the most common lower label along its outer edge; 0 if
// none): what its pixels become when the structure shrinks or is dropped.
int64_t ParentLabel(const LabelMask& mask, const Component& component);

// Moves the component's boundary along its normal by offset[pixel] pixels (positive grows,
// negative shrinks). It grows only over lower labels; pixels it gives up take `parent`.
void DisplaceBoundary(LabelMask* mask, const Component& component,
                      const std::vector<double>& offset, int64_t parent);

// How hard the component is to outline, in [0, 1]: from compactness 4πA/P², solidity
// A/A_hull, boundary roughness and small area (ALGORITHM.md §7's difficulty-guided model).
struct ShapeDifficulty {
  double compactness = 0, solidity = 0, roughness = 0, smallness = 0;
  double difficulty = 0;
};
ShapeDifficulty MeasureDifficulty(const Component& component, int64_t height, int64_t width);

}  // namespace splitfed::sim
