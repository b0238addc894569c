// Aggregation rules on hand-made states with exact expected values.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "aggregation/aggregator.h"
#include "split/model_state.h"
#include "split/unet.h"
#include "tests/refusal.h"

namespace splitfed {
namespace {

using test_refusal::Refused;

SiteUpdate Update(const std::string& site, int64_t n, float w, int64_t counter) {
  SiteUpdate u;
  u.site = site;
  u.num_images = n;
  u.state["conv.weight"] = torch::full({2, 2}, w);
  u.state["bn.num_batches_tracked"] = torch::tensor(counter);
  return u;
}

TEST(FedAvg, WeightsAreProportionalToImageCounts) {
  FedAvg rule;
  const auto weights = *rule.Weights({Update("a", 10, 0, 0), Update("b", 30, 0, 0)});
  ASSERT_EQ(weights.size(), 2u);
  EXPECT_DOUBLE_EQ(weights[0], 0.25);
  EXPECT_DOUBLE_EQ(weights[1], 0.75);
}

TEST(FedAvg, AveragesFloatsAndTakesTheLargestCounter) {
  FedAvg rule;
  const NamedTensors out =
      *rule.Aggregate({Update("a", 10, 1.0f, 5), Update("b", 30, 3.0f, 7), Update("c", 60, -1.0f, 6)});
  // 0.1·1 + 0.3·3 + 0.6·(−1) = 0.4
  EXPECT_TRUE(torch::allclose(out.at("conv.weight"), torch::full({2, 2}, 0.4f), 0, 1e-7));
  EXPECT_EQ(out.at("bn.num_batches_tracked").item<int64_t>(), 7);
  EXPECT_EQ(out.at("bn.num_batches_tracked").scalar_type(), torch::kLong);
}

TEST(FedAvg, OneSiteIsReturnedUnchanged) {
  FedAvg rule;
  const NamedTensors out = *rule.Aggregate({Update("a", 4, 2.5f, 3)});
  EXPECT_TRUE(torch::equal(out.at("conv.weight"), torch::full({2, 2}, 2.5f)));
}

TEST(ValidateUpdates, RejectsEachKindOfBadUpdateNamingTheSite) {
  auto error = [](std::vector<SiteUpdate> updates) {
    return std::string(ValidateUpdates(updates).message());
  };
  EXPECT_NE(error({}).find("no site updates"), std::string::npos);
  EXPECT_NE(error({Update("a", 1, 0, 0), Update("b", 0, 0, 0)}).find("site b: image count"),
            std::string::npos);
  SiteUpdate wrong_shape = Update("b", 1, 0, 0);
  wrong_shape.state["conv.weight"] = torch::zeros({3, 2});
  EXPECT_NE(error({Update("a", 1, 0, 0), wrong_shape}).find("site b: 'conv.weight' has shape"),
            std::string::npos);
  SiteUpdate missing = Update("b", 1, 0, 0);
  missing.state.erase("conv.weight");
  missing.state["other"] = torch::zeros({2, 2});
  EXPECT_NE(error({Update("a", 1, 0, 0), missing}).find("site b: lacks 'conv.weight'"),
            std::string::npos);
  SiteUpdate nan = Update("c", 1, 0, 0);
  nan.state["conv.weight"][0][1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(error({Update("a", 1, 0, 0), nan}).find("site c: 'conv.weight' holds NaN"),
            std::string::npos);
  FedAvg rule;
  EXPECT_TRUE(Refused(rule.Aggregate({Update("a", 1, 0, 0), nan}),
                      absl::StatusCode::kInvalidArgument, "holds NaN or infinite values"));
}

TEST(MakeAggregator, KnowsFedAvgAndNamesTheAlternatives) {
  EXPECT_EQ((*MakeAggregator("fedavg"))->name(), "fedavg");
  const auto unknown = MakeAggregator("fedprox");
  ASSERT_TRUE(Refused(unknown, absl::StatusCode::kInvalidArgument));
  EXPECT_NE(unknown.status().message().find("available: fedavg"), std::string::npos);
}

TEST(ModelState, ExtractLoadRoundTripAndMismatchesAreRefused) {
  UNetConfig config;
  config.base_width = 2;
  config.depth = 2;
  torch::manual_seed(1);
  UNetSegment a = MakeUNet(config);
  torch::manual_seed(2);
  UNetSegment b = MakeUNet(config);
  const NamedTensors state = ExtractState(*a);
  EXPECT_TRUE(state.count("enc0_conv1.conv.weight"));
  EXPECT_TRUE(state.count("enc0_conv1.bn.running_mean"));
  ASSERT_TRUE(LoadState(*b, state).ok());
  for (const auto& [name, t] : ExtractState(*b)) EXPECT_TRUE(torch::equal(t, state.at(name))) << name;

  NamedTensors bad = state;
  bad["head.conv.weight"] = torch::zeros({1});
  const absl::Status s = LoadState(*b, bad);
  EXPECT_NE(s.message().find("'head.conv.weight' has shape"), std::string::npos) << s;
  bad = state;
  bad.erase("head.conv.bias");
  EXPECT_NE(LoadState(*b, bad).message().find("lacks 'head.conv.bias'"), std::string::npos);
  bad = state;
  bad["extra"] = torch::zeros({1});
  EXPECT_NE(LoadState(*b, bad).message().find("unknown entry 'extra'"), std::string::npos);
}

// Per-coordinate values: site k's tensor is {v_k0, v_k1, v_k2}.
SiteUpdate Values(const std::string& site, int64_t n, std::vector<float> v, double val_loss = 1) {
  SiteUpdate u;
  u.site = site;
  u.num_images = n;
  u.validation_loss = val_loss;
  u.state["w"] = torch::tensor(v);
  u.state["bn.num_batches_tracked"] = torch::tensor(n);
  return u;
}

TEST(CoordinateMedian, TakesTheMiddleValueOrTheMeanOfTheTwoMiddleOnes) {
  CoordinateMedian rule;
  // Odd K: per coordinate the middle of {1, 5, 3}, {10, -2, 4}, {0, 0, 100}.
  NamedTensors odd = *rule.Aggregate({Values("a", 1, {1, 10, 0}), Values("b", 1, {5, -2, 0}),
                                      Values("c", 1, {3, 4, 100})});
  EXPECT_TRUE(torch::equal(odd.at("w"), torch::tensor({3.0f, 4.0f, 0.0f})));
  // Even K: the mean of the two middle values; image counts do not matter.
  NamedTensors even = *rule.Aggregate({Values("a", 1, {1, 0, 0}), Values("b", 100, {2, 0, 0}),
                                       Values("c", 1, {10, 0, 0}), Values("d", 1, {20, 0, 0})});
  EXPECT_FLOAT_EQ(even.at("w")[0].item<float>(), 6.0f);
  EXPECT_EQ(even.at("bn.num_batches_tracked").item<int64_t>(), 100) << "counters: the largest";
  EXPECT_EQ(*rule.Weights({Values("a", 1, {0}), Values("b", 9, {0})}),
            (std::vector<double>{0.5, 0.5}));
}

TEST(CoordinateMedian, OneOutlierSiteDoesNotMoveIt) {
  CoordinateMedian median;
  FedAvg mean;
  const std::vector<SiteUpdate> updates = {Values("a", 10, {1, 1, 1}), Values("b", 10, {1.2f, 1, 1}),
                                           Values("c", 10, {1e6f, -1e6f, 1e6f})};
  EXPECT_FLOAT_EQ((*median.Aggregate(updates)).at("w")[0].item<float>(), 1.2f);
  EXPECT_GT((*mean.Aggregate(updates)).at("w")[0].item<float>(), 1e5f);
}

TEST(TrimmedMean, DropsTheExtremesOfEachCoordinate) {
  TrimmedMean rule(0.25);  // K = 4: drop one value at each end
  NamedTensors out = *rule.Aggregate({Values("a", 1, {1, -5, 7}), Values("b", 1, {2, 0, 7}),
                                      Values("c", 1, {3, 0, 7}), Values("d", 50, {100, 9, 7})});
  EXPECT_TRUE(torch::allclose(out.at("w"), torch::tensor({2.5f, 0.0f, 7.0f})));
  // Fewer sites than it takes to trim one: a plain, unweighted mean.
  NamedTensors small = *TrimmedMean(0.2).Aggregate({Values("a", 1, {1, 0, 0}), Values("b", 3, {4, 0, 0})});
  EXPECT_FLOAT_EQ(small.at("w")[0].item<float>(), 2.5f);
}

TEST(QualityWeighted, WeightsByImagesTimesInverseValidationLossSquared) {
  QualityWeighted rule;  // γ = 2
  // n = 10, L = 1 → 10; n = 10, L = 2 → 2.5; n = 20, L = 2 → 5. Total 17.5.
  const auto w = *rule.Weights({Values("a", 10, {0}, 1.0), Values("b", 10, {0}, 2.0),
                                Values("c", 20, {0}, 2.0)});
  EXPECT_DOUBLE_EQ(w[0], 10 / 17.5);
  EXPECT_DOUBLE_EQ(w[1], 2.5 / 17.5);
  EXPECT_DOUBLE_EQ(w[2], 5 / 17.5);
  EXPECT_TRUE(Refused(rule.Weights({Values("a", 10, {0}, -1.0)}),
                      absl::StatusCode::kInvalidArgument,
                      "validation loss -1 cannot weigh a site"));
  EXPECT_TRUE(Refused(rule.Weights({Values("a", 10, {0}, std::nan(""))}),
                      absl::StatusCode::kInvalidArgument, "validation loss nan cannot weigh"));
  const auto zero = *rule.Weights({Values("a", 10, {0}, 0.0), Values("b", 10, {0}, 1.0)});
  EXPECT_GT(zero[0], 0.999) << "a zero loss is floored, not infinite";
}

SiteUpdate WithReliability(const std::string& site, int64_t n, double q) {
  SiteUpdate u = Values(site, n, {0});
  u.reliability = q;
  return u;
}

TEST(ReliabilityWeighted, WeightsByImagesTimesEpsilonPlusReliability) {
  ReliabilityWeighted rule;  // ε = 0.05, γ = 1
  // All equally noisy: FedAvg's weights.
  const auto same = *rule.Weights({WithReliability("a", 10, 0.3), WithReliability("b", 30, 0.3)});
  EXPECT_DOUBLE_EQ(same[0], 0.25);
  EXPECT_DOUBLE_EQ(same[1], 0.75);
  // One clean site (q = 1) and two whose masks all look unreliable (q = 0), equal sizes:
  // 1.05 : 0.05 : 0.05.
  const auto one_clean = *rule.Weights({WithReliability("a", 10, 1.0), WithReliability("b", 10, 0.0),
                                        WithReliability("c", 10, 0.0)});
  EXPECT_DOUBLE_EQ(one_clean[0], 1.05 / 1.15);
  EXPECT_DOUBLE_EQ(one_clean[1], 0.05 / 1.15);
  EXPECT_GT(one_clean[2], 0) << "q = 0 still counts, a little";
  // γ = 2 sharpens: 1.05² : 0.05².
  const auto sharp = *ReliabilityWeighted(0.05, 2).Weights(
      {WithReliability("a", 10, 1.0), WithReliability("b", 10, 0.0)});
  EXPECT_DOUBLE_EQ(sharp[1], 0.0025 / (1.1025 + 0.0025));
  EXPECT_TRUE(Refused(rule.Weights({WithReliability("a", 10, 1.5)}),
                      absl::StatusCode::kInvalidArgument, "reliability 1.5 is outside [0, 1]"));
}

TEST(DistanceAware, IsFedAvgUntilSitesAreFlaggedThenDampsTheFarNoisyOnes) {
  DistanceAware rule;
  // Clean a at 0; noisy b at distance 3 from a, noisy c at distance 6 (the farthest).
  std::vector<SiteUpdate> updates = {Values("a", 10, {0, 0, 0}), Values("b", 20, {3, 0, 0}),
                                     Values("c", 10, {0, 6, 0})};
  const auto plain = *rule.Weights(updates);
  EXPECT_DOUBLE_EQ(plain[1], 0.5) << "nobody flagged: FedAvg";
  updates[1].flagged_noisy = updates[2].flagged_noisy = true;
  const auto w = *rule.Weights(updates);
  // d_b = 3/6, d_c = 6/6: raw 10, 20·e^(−0.5), 10·e^(−1).
  const double ra = 10, rb = 20 * std::exp(-0.5), rc = 10 * std::exp(-1.0);
  EXPECT_NEAR(w[0], ra / (ra + rb + rc), 1e-12);
  EXPECT_NEAR(w[1], rb / (ra + rb + rc), 1e-12);
  EXPECT_NEAR(w[2], rc / (ra + rb + rc), 1e-12);
  // Everyone flagged: no clean reference, FedAvg again.
  updates[0].flagged_noisy = true;
  EXPECT_DOUBLE_EQ((*rule.Weights(updates))[1], 0.5);
}

TEST(LayerwiseQuality, ShallowEntriesFollowImageCountsDeepOnesQuality) {
  LayerwiseQuality rule({"enc1", "mid", "head"});
  EXPECT_DOUBLE_EQ(rule.Depth("front.enc1.conv.weight"), 0.0);
  EXPECT_DOUBLE_EQ(rule.Depth("mid.0.bias"), 0.5);
  EXPECT_DOUBLE_EQ(rule.Depth("back.head.conv.weight"), 1.0);
  EXPECT_DOUBLE_EQ(rule.Depth("loss.log_variances"), 1.0) << "unknown: deepest";
  auto site = [](const std::string& name, int64_t n, double noise, float v) {
    SiteUpdate u;
    u.site = name;
    u.num_images = n;
    u.boundary_noise = noise;
    for (const char* key : {"front.enc1.w", "mid.w", "back.head.w"}) u.state[key] = torch::tensor({v});
    return u;
  };
  // Equal counts; a has boundary noise 0.05, b 0.45: quality 1/0.1 : 1/0.5 = 10 : 2.
  const std::vector<SiteUpdate> updates = {site("a", 10, 0.05, 1.0f), site("b", 10, 0.45, 0.0f)};
  const auto q = *rule.Weights(updates);
  EXPECT_NEAR(q[0], 10.0 / 12.0, 1e-12);
  const NamedTensors out = *rule.Aggregate(updates);
  EXPECT_NEAR(out.at("front.enc1.w").item<float>(), 0.5, 1e-6) << "λ = 0: by image count";
  EXPECT_NEAR(out.at("mid.w").item<float>(), 0.5 * 0.5 + 0.5 * 10.0 / 12.0, 1e-6);
  EXPECT_NEAR(out.at("back.head.w").item<float>(), 10.0 / 12.0, 1e-6) << "λ = 1: by quality";
  std::vector<SiteUpdate> bad = updates;
  bad[1].boundary_noise = 1.5;
  EXPECT_TRUE(Refused(rule.Weights(bad), absl::StatusCode::kInvalidArgument,
                      "boundary noise 1.5 is outside [0, 1]"));
}

TEST(MakeAggregator, KnowsEveryRuleAndNamesThemWhenAsked) {
  for (const char* name : {"fedavg", "quality", "reliability", "median", "trimmed-mean",
                           "distance", "layerwise-quality"}) {
    auto rule = MakeAggregator(name);
    ASSERT_TRUE(rule.ok()) << name;
    EXPECT_EQ((*rule)->name(), name);
  }
  auto unknown = MakeAggregator("krum");
  ASSERT_TRUE(Refused(unknown, absl::StatusCode::kInvalidArgument));
  EXPECT_NE(unknown.status().message().find("trimmed-mean"), std::string::npos);
}

}  // namespace
}  // namespace splitfed
