// The label-noise models and partitions on hand-made masks where the effect is known.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <set>

#include "sim/label_noise.h"
#include "sim/partition.h"
#include "tests/refusal.h"

namespace splitfed::sim {
namespace {

using test_refusal::Refused;

constexpr double kPi = 3.14159265358979323846;

// A shape of radius r(θ) = radius·(1 + lobes_depth·cos(lobes·θ)) around (cy, cx).
void Paint(LabelMask* m, double cy, double cx, double radius, int64_t label, int lobes = 0,
           double lobes_depth = 0) {
  for (int64_t y = 0; y < m->height; ++y)
    for (int64_t x = 0; x < m->width; ++x) {
      const double dy = y - cy, dx = x - cx;
      const double r = radius * (1 + lobes_depth * std::cos(lobes * std::atan2(dy, dx)));
      if (dy * dy + dx * dx <= r * r) m->labels[y * m->width + x] = label;
    }
}

LabelMask Blank(int64_t size) { return {size, size, std::vector<int64_t>(size * size, 0)}; }

LabelMask Disc(int64_t size, double radius) {
  LabelMask m = Blank(size);
  Paint(&m, (size - 1) / 2.0, (size - 1) / 2.0, radius, 1);
  return m;
}

LabelMask Lobed(int64_t size, double radius) {
  LabelMask m = Blank(size);
  Paint(&m, (size - 1) / 2.0, (size - 1) / 2.0, radius, 1, 5, 0.4);
  return m;
}

// Four classes: a body-like organ (1) holding a lesion (3), and a second organ (2).
LabelMask Organs(int64_t size) {
  LabelMask m = Blank(size);
  Paint(&m, size * 0.4, size * 0.4, size * 0.25, 1);
  Paint(&m, size * 0.4, size * 0.4, size * 0.08, 3);
  Paint(&m, size * 0.75, size * 0.75, size * 0.12, 2, 3, 0.3);
  return m;
}

std::pair<double, double> Centroid(const LabelMask& m) {
  double sy = 0, sx = 0, n = 0;
  for (int64_t i = 0; i < m.size(); ++i)
    if (m.labels[i] > 0) sy += i / m.width, sx += i % m.width, n += 1;
  return {sy / n, sx / n};
}

int64_t Changed(const LabelMask& a, const LabelMask& b) {
  int64_t n = 0;
  for (int64_t i = 0; i < a.size(); ++i) n += a.labels[i] != b.labels[i];
  return n;
}

// The recipes' pixel sizes (for the boundary model, the `pixels` amplitude).
NoiseParams Params(int64_t classes = 2, NoiseBias bias = NoiseBias::kMixed) {
  NoiseParams p;
  p.num_classes = classes;
  p.bias = bias;
  p.amplitude = BoundaryAmplitude::kPixels;
  return p;
}

double DiceOfLabel(const LabelMask& a, const LabelMask& b, int64_t label) {
  int64_t both = 0, na = 0, nb = 0;
  for (size_t i = 0; i < a.labels.size(); ++i) {
    na += a.labels[i] == label;
    nb += b.labels[i] == label;
    both += a.labels[i] == label && b.labels[i] == label;
  }
  return na + nb ? 2.0 * both / (na + nb) : 1.0;
}

TEST(DisplaceBoundary, ShrinksAndGrowsADiscByTheExpectedRing) {
  const LabelMask disc = Disc(128, 30);
  const Component c = FindComponents(disc).at(0);
  for (double offset : {-8.0, -3.0, 3.0, 8.0}) {
    LabelMask m = disc;
    DisplaceBoundary(&m, c, std::vector<double>(m.size(), offset), 0);
    const double expected = kPi * (30 + offset) * (30 + offset);
    EXPECT_NEAR(m.CountOf(1), expected, 0.04 * expected) << "offset " << offset;
  }
}

TEST(Erosion, ShrinksAreaWithinTheRadiusRange) {
  // At 256² the radius range is exactly ALGORITHM.md's 3..15 pixels.
  const LabelMask disc = Disc(256, 60);
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    std::mt19937_64 rng(seed);
    const LabelMask m = CorruptMask(disc, NoiseModel::kErosion, Params(), rng);
    EXPECT_LT(m.CountOf(1), kPi * 57 * 57 * 1.02) << "at least 3 px off";
    EXPECT_GT(m.CountOf(1), kPi * 45 * 45 * 0.98) << "at most 15 px off";
    EXPECT_EQ(m.CountOf(1) + m.CountOf(0), m.size());
  }
}

TEST(Dilation, GrowsAreaWithinTheRadiusRange) {
  const LabelMask disc = Disc(256, 60);
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    std::mt19937_64 rng(seed);
    const LabelMask m = CorruptMask(disc, NoiseModel::kDilation, Params(), rng);
    EXPECT_GT(m.CountOf(1), kPi * 63 * 63 * 0.98);
    EXPECT_LT(m.CountOf(1), kPi * 75 * 75 * 1.02);
  }
}

TEST(Erosion, AStructureInsideAnotherGivesItsPixelsToItsParent) {
  const LabelMask organs = Organs(128);
  std::mt19937_64 rng(3);
  const LabelMask m = CorruptMask(organs, NoiseModel::kErosion, Params(4), rng);
  EXPECT_LT(m.CountOf(3), organs.CountOf(3));
  // The lesion's lost pixels went to organ 1, not to the background: background only grew
  // by what organ 1 and organ 2 lost at their outer edges.
  for (int64_t i = 0; i < m.size(); ++i)
    if (organs.labels[i] == 3 && m.labels[i] != 3) {
      EXPECT_EQ(m.labels[i], 1);
    }
}

TEST(Affine, MovesTheCentroidAndKeepsTheAreaWithinTheScaleRange) {
  const LabelMask disc = Disc(256, 40);
  const auto [cy, cx] = Centroid(disc);
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    std::mt19937_64 rng(seed);
    const LabelMask m = CorruptMask(disc, NoiseModel::kAffine, Params(), rng);
    const auto [my, mx] = Centroid(m);
    EXPECT_GT(std::hypot(my - cy, mx - cx), 5.0) << "translated by 5..15 px per axis";
    EXPECT_LT(std::hypot(my - cy, mx - cx), 15 * std::sqrt(2.0) + 1);
    EXPECT_GT(m.CountOf(1), disc.CountOf(1) * 0.85 * 0.85 * 0.97);
    EXPECT_LT(m.CountOf(1), disc.CountOf(1) * 1.15 * 1.15 * 1.03);
  }
}

TEST(Elastic, WarpsTheBoundaryButKeepsTheShapeRoughly) {
  const LabelMask disc = Disc(128, 30);
  std::mt19937_64 rng(4);
  const LabelMask m = CorruptMask(disc, NoiseModel::kElastic, Params(), rng);
  EXPECT_GT(Changed(disc, m), 20);
  EXPECT_NEAR(m.CountOf(1), disc.CountOf(1), 0.3 * disc.CountOf(1));
  // Far inside and far outside stay as they were.
  EXPECT_EQ(m.labels[64 * 128 + 64], 1);
  EXPECT_EQ(m.labels[2 * 128 + 2], 0);
}

TEST(Difficulty, ALobedShapeIsHarderThanADiscAndASmallDiscHarderThanALargeOne) {
  const ShapeDifficulty disc = MeasureDifficulty(FindComponents(Disc(128, 30))[0], 128, 128);
  const ShapeDifficulty lobed = MeasureDifficulty(FindComponents(Lobed(128, 30))[0], 128, 128);
  const ShapeDifficulty small = MeasureDifficulty(FindComponents(Disc(128, 4))[0], 128, 128);
  EXPECT_GT(disc.compactness, 0.85);
  EXPECT_GT(disc.solidity, 0.95);
  EXPECT_LT(lobed.solidity, disc.solidity - 0.1);
  EXPECT_LT(lobed.compactness, disc.compactness - 0.2);
  EXPECT_GT(lobed.difficulty, disc.difficulty + 0.1);
  EXPECT_GT(small.difficulty, disc.difficulty);
}

TEST(BoundaryNoise, MovesALobedBoundaryMoreThanADiscs) {
  double disc_moved = 0, lobed_moved = 0;
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    const LabelMask disc = Disc(256, 60), lobed = Lobed(256, 60);
    std::mt19937_64 a(seed), b(seed);
    // Pixels changed per boundary pixel: the mean displacement along the normal.
    disc_moved += double(Changed(disc, CorruptMask(disc, NoiseModel::kBoundary, Params(), a))) /
                  (2 * kPi * 60);
    lobed_moved += double(Changed(lobed, CorruptMask(lobed, NoiseModel::kBoundary, Params(), b))) /
                   (2 * kPi * 60 * 1.3);
  }
  EXPECT_GT(lobed_moved, 1.3 * disc_moved) << "disc " << disc_moved / 8 << " px, lobed "
                                           << lobed_moved / 8 << " px";
}

TEST(BoundaryNoise, BiasDecidesTheDirectionAndChangesStayInTheBand) {
  const LabelMask lobed = Lobed(128, 30);
  int64_t shrunk = 0, grown = 0;
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    std::mt19937_64 a(seed), b(seed);
    shrunk += CorruptMask(lobed, NoiseModel::kBoundary, Params(2, NoiseBias::kShrink), a).CountOf(1);
    const LabelMask g = CorruptMask(lobed, NoiseModel::kBoundary, Params(2, NoiseBias::kExpand), b);
    grown += g.CountOf(1);
    // 128² is half the reference size: at most (12 + 6) / 2 = 9 px from the clean boundary.
    EXPECT_EQ(g.labels[64 * 128 + 64], 1);
    EXPECT_EQ(g.labels[0], 0);
  }
  EXPECT_LT(shrunk, 6 * lobed.CountOf(1));
  EXPECT_GT(grown, 6 * lobed.CountOf(1));
}

// The relative amplitude damages a structure by the same share at any image size, and enough
// to matter at 64² (the pixel recipe barely moves it there).
TEST(BoundaryNoise, TheRelativeAmplitudeDamagesAlikeAtEverySize) {
  NoiseParams relative = Params();
  relative.amplitude = BoundaryAmplitude::kRelative;
  double dice64 = 0, dice256 = 0, pixels64 = 0;
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    const LabelMask small = Lobed(64, 15), large = Lobed(256, 60);
    std::mt19937_64 a(seed), b(seed), c(seed);
    dice64 += DiceOfLabel(small, CorruptMask(small, NoiseModel::kBoundary, relative, a), 1) / 8;
    dice256 += DiceOfLabel(large, CorruptMask(large, NoiseModel::kBoundary, relative, b), 1) / 8;
    pixels64 += DiceOfLabel(small, CorruptMask(small, NoiseModel::kBoundary, Params(), c), 1) / 8;
  }
  EXPECT_NEAR(dice64, dice256, 0.05);
  EXPECT_GT(dice64, 0.6);
  EXPECT_LT(dice64, 0.9);
  EXPECT_GT(pixels64, 0.9) << "the pixel recipe at 64²";
}

TEST(MissingAndExtra, DropAStructureOrAddBlobs) {
  const LabelMask organs = Organs(96);
  std::mt19937_64 rng(5);
  const LabelMask missing = CorruptMask(organs, NoiseModel::kMissing, Params(4), rng);
  EXPECT_LT(FindComponents(missing).size(), FindComponents(organs).size());
  const LabelMask extra = CorruptMask(organs, NoiseModel::kExtra, Params(4), rng);
  int64_t foreground_before = organs.size() - organs.CountOf(0);
  int64_t foreground_after = extra.size() - extra.CountOf(0);
  EXPECT_GT(foreground_after, foreground_before);
}

TEST(Confusion, RelabelsAWholeStructureToANeighbouringClass) {
  const LabelMask organs = Organs(96);
  std::mt19937_64 rng(6);
  const LabelMask m = CorruptMask(organs, NoiseModel::kConfusion, Params(4), rng);
  EXPECT_GT(Changed(organs, m), 0);
  EXPECT_EQ(m.CountOf(0), organs.CountOf(0)) << "shapes unchanged, only classes";
  for (int64_t i = 0; i < m.size(); ++i)
    if (m.labels[i] != organs.labels[i]) {
      EXPECT_EQ(std::abs(m.labels[i] - organs.labels[i]), 1);
    }
}

TEST(EveryModel, KeepsValidLabelsAndSizeAndIsReproducible) {
  const LabelMask organs = Organs(64);
  for (const char* name : {"erosion", "dilation", "affine", "elastic", "boundary", "missing",
                           "extra", "confusion"}) {
    const NoiseModel model = *ParseNoiseModel(name);
    EXPECT_STREQ(NoiseModelName(model), name);
    std::mt19937_64 a(11), b(11);
    const LabelMask m1 = CorruptMask(organs, model, Params(4), a);
    const LabelMask m2 = CorruptMask(organs, model, Params(4), b);
    ASSERT_EQ(m1.height, 64);
    ASSERT_EQ(m1.width, 64);
    ASSERT_EQ(m1.labels.size(), organs.labels.size());
    EXPECT_EQ(m1.labels, m2.labels) << name << ": same seed, same mask";
    for (int64_t v : m1.labels) ASSERT_TRUE(v >= 0 && v < 4) << name << " wrote class " << v;
    EXPECT_GT(Changed(organs, m1), 0) << name << " changed nothing";
  }
  EXPECT_TRUE(
      Refused(ParseNoiseModel("blur"), absl::StatusCode::kInvalidArgument, "unknown noise model"));
  EXPECT_NE(ParseNoiseModel("blur").status().message().find("boundary"), std::string::npos);
}

TEST(Partition, IidSharesAreEqualDisjointAndCoverThePool) {
  std::mt19937_64 rng(1);
  const Partition p = IidPartition(103, 4, rng);
  std::set<int64_t> seen;
  for (const auto& share : p) {
    EXPECT_TRUE(share.size() == 25 || share.size() == 26);
    for (int64_t i : share) EXPECT_TRUE(seen.insert(i).second);
  }
  EXPECT_EQ(seen.size(), 103u);
}

TEST(Partition, QuantitySkewRespectsTheMinimumAndIsSkewedForSmallAlpha) {
  std::mt19937_64 rng(2);
  const Partition p = *QuantitySkewPartition(200, 5, 0.3, 8, rng);
  size_t total = 0, largest = 0, smallest = 1000;
  for (const auto& share : p) {
    total += share.size();
    largest = std::max(largest, share.size());
    smallest = std::min(smallest, share.size());
  }
  EXPECT_EQ(total, 200u);
  EXPECT_GE(smallest, 8u);
  EXPECT_GT(largest, 2 * smallest);
  EXPECT_TRUE(Refused(QuantitySkewPartition(20, 5, 0.3, 8, rng), absl::StatusCode::kInvalidArgument,
                      "cannot give 5 sites at least 8 each"));
  EXPECT_TRUE(Refused(QuantitySkewPartition(20, 5, 0, 1, rng), absl::StatusCode::kInvalidArgument,
                      "alpha must be positive"));
}

TEST(Partition, ClassSkewGivesEachSiteASliceOfTheLabelDistribution) {
  const std::vector<int64_t> dominant = {2, 1, 2, 1, 3, 3, 1, 2, 3};
  const std::vector<int64_t> area = {5, 1, 6, 2, 7, 8, 3, 4, 9};
  const Partition p = ClassSkewPartition(dominant, area, 3);
  for (const auto& share : p) {
    ASSERT_EQ(share.size(), 3u);
    for (int64_t i : share) EXPECT_EQ(dominant[i], dominant[share[0]]);
  }
}

}  // namespace
}  // namespace splitfed::sim
