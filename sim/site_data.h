// The data of one simulated federation: each site's images with its clean and its noisy
// masks, and the clean held-out test set every method is scored on.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "datasets/phantom.h"
#include "datasets/segmentation_set.h"
#include "sim/experiment.h"

namespace splitfed::sim {

struct SiteData {
  std::string name;
  SegmentationSet clean;        // the truth (gold masks in annotator mode)
  SegmentationSet annotated;    // what the site trains on: its annotator's, then corrupted
  std::vector<bool> corrupted;  // per image: synthetic noise was applied
  SiteNoise noise;
  ScannerAppearance appearance;
  std::string annotator;  // annotator mode: whose masks the site has
};

struct SimData {
  std::vector<SiteData> sites;
  SegmentationSet test;  // never corrupted
};

// Builds the federation's data for one seed and noise setting. The images, the partition and
// the test set depend only on the seed, so every method and noise setting sees the same
// images; the masks' corruption depends on the seed and the site.
absl::StatusOr<SimData> BuildSimData(const ExperimentConfig& config, const NoiseSetting& noise,
                                     uint64_t seed);

// The scanner each site gets under the appearance partition (seeded; site 0 included).
ScannerAppearance SiteAppearance(uint64_t seed, int64_t site);

}  // namespace splitfed::sim
