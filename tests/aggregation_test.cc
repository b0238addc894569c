// Aggregation rules on hand-made states with exact expected values.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "aggregation/aggregator.h"
#include "split/model_state.h"
#include "split/unet.h"

namespace splitfed {
namespace {

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
  EXPECT_FALSE(rule.Aggregate({Update("a", 1, 0, 0), nan}).ok());
}

TEST(MakeAggregator, KnowsFedAvgAndNamesTheAlternatives) {
  EXPECT_EQ((*MakeAggregator("fedavg"))->name(), "fedavg");
  const auto unknown = MakeAggregator("fedprox");
  ASSERT_FALSE(unknown.ok());
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

}  // namespace
}  // namespace splitfed
