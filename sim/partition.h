// Dividing one pool of images among simulated sites (docs/ALGORITHM.md §6). Torch-free: a
// partition is just lists of pool indices, one per site, disjoint.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace splitfed::sim {

enum class PartitionKind {
  kIid,         // a random, equal share each
  kQuantity,    // shares drawn from a symmetric Dirichlet(α): some sites are much larger
  kClass,       // label-distribution skew: each site mostly sees images of one dominant class
  kAppearance,  // an IID share each, seen through its own scanner (gamma, contrast, blur)
};
absl::StatusOr<PartitionKind> ParsePartitionKind(const std::string& name);
const char* PartitionKindName(PartitionKind kind);

using Partition = std::vector<std::vector<int64_t>>;  // site → pool indices

// `n` images, `sites` shares of (almost) equal size, at random.
Partition IidPartition(int64_t n, int64_t sites, std::mt19937_64& rng);

// Shares ∝ p ~ Dirichlet(α, …, α), every site given at least `min_per_site` images.
absl::StatusOr<Partition> QuantitySkewPartition(int64_t n, int64_t sites, double alpha,
                                                int64_t min_per_site, std::mt19937_64& rng);

// `dominant_class[i]` is image i's largest foreground class and `area[i]` its foreground
// area. Images are ordered by (dominant class, area) and dealt out in contiguous blocks of
// equal size, so each site sees a narrow slice of the label distribution.
Partition ClassSkewPartition(const std::vector<int64_t>& dominant_class,
                             const std::vector<int64_t>& area, int64_t sites);

}  // namespace splitfed::sim
