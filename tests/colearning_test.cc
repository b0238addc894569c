// SplitFed-CL's formulas on small hand-made tensors with exact expected values.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "colearning/refinement.h"
#include "colearning/reliability.h"

namespace splitfed::colearning {
namespace {

TEST(PerImageReliability, IsTheMeanDiceOverClassesPresentInEither) {
  // Four 1×4 images, 3 classes.
  const torch::Tensor truth = torch::tensor({1, 1, 0, 0,     // class 1 in 2 px
                                             0, 0, 0, 0,     // nothing
                                             2, 2, 0, 0,     // class 2
                                             1, 2, 0, 0}).view({4, 1, 4});
  const torch::Tensor teacher = torch::tensor({1, 0, 1, 0,   // overlap 1 of 2+2: Dice 0.5
                                               0, 0, 0, 0,   // both empty: 1
                                               0, 0, 0, 0,   // misses class 2: 0
                                               1, 2, 0, 0}).view({4, 1, 4});
  const std::vector<double> r = PerImageReliability(teacher, truth, 3);
  ASSERT_EQ(r.size(), 4u);
  EXPECT_DOUBLE_EQ(r[0], 0.5);  // class 2 absent from both: not averaged in
  EXPECT_DOUBLE_EQ(r[1], 1.0);
  EXPECT_DOUBLE_EQ(r[2], 0.0);
  EXPECT_DOUBLE_EQ(r[3], 1.0);
}

const std::vector<double> kBimodal = {0.10, 0.12, 0.08, 0.11, 0.09, 0.90, 0.95, 0.85};

TEST(TwoGaussians, SplitsABimodalSample) {
  const TwoGaussians g = *FitTwoGaussians(kBimodal);
  EXPECT_NEAR(g.mean[0], 0.10, 1e-6);
  EXPECT_NEAR(g.mean[1], 0.90, 1e-6);
  EXPECT_NEAR(g.weight[0], 5.0 / 8, 1e-6);
  EXPECT_NEAR(g.variance[0], 0.0002, 1e-9);  // population variance of the low five
  EXPECT_GT(g.PosteriorLow(0.1), 0.999);
  EXPECT_LT(g.PosteriorLow(0.9), 0.001);
  EXPECT_FALSE(FitTwoGaussians({1.0}).ok());
  EXPECT_FALSE(FitTwoGaussians({1.0, std::nan("")}).ok());
}

TEST(ReliableImages, LowLossAndHighAgreementAreReliable) {
  std::vector<double> r(8, 0.9);
  r[1] = 0.5;  // low loss, but the teacher agrees with it too little (τ_min = 0.75)
  const std::vector<bool> reliable = ReliableImages(kBimodal, r, ThresholdOptions{});
  EXPECT_EQ(reliable, (std::vector<bool>{true, false, true, true, true, false, false, false}));
  EXPECT_DOUBLE_EQ(SiteReliability(reliable), 4.0 / 8);
}

TEST(ReliableImages, OnePopulationIsAllReliable) {
  // Means within δ = 0.05: the δ guard keeps every image, however the mixture splits them.
  const std::vector<double> losses = {0.50, 0.51, 0.49, 0.52, 0.50, 0.48};
  const std::vector<bool> reliable = ReliableImages(losses, std::vector<double>(6, 0.9), {});
  EXPECT_EQ(std::count(reliable.begin(), reliable.end(), true), 6);
  // Fewer than 4 images: all reliable.
  EXPECT_EQ(ReliableImages({0.1, 0.9}, {0.9, 0.9}, {}), (std::vector<bool>{true, true}));
}

TEST(ReliableImages, FixedTauUsesOnlyTheAgreement) {
  ThresholdOptions fixed;
  fixed.fixed_tau = true;
  fixed.tau_min = 0.8;
  EXPECT_EQ(ReliableImages({5, 5, 5}, {0.79, 0.8, 0.95}, fixed),
            (std::vector<bool>{false, true, true}));
}

TEST(Confidence, IsOneMinusNormalisedEntropy) {
  // Two classes, three pixels: certain, uniform, (0.9, 0.1).
  const torch::Tensor p = torch::tensor({1.0f, 0.5f, 0.9f, 0.0f, 0.5f, 0.1f}).view({1, 2, 1, 3});
  const torch::Tensor c = Confidence(p);
  const double h = -(0.9 * std::log(0.9) + 0.1 * std::log(0.1)) / std::log(2.0);
  EXPECT_NEAR(c[0][0][0].item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(c[0][0][1].item<double>(), 0.0, 1e-6);
  EXPECT_NEAR(c[0][0][2].item<double>(), 1 - h, 1e-6);
}

TEST(FusedPrediction, WeighsTheMoreConfidentPredictionMore) {
  // Pixel 0: a certain teacher and a uniform student → the teacher. Pixel 1: both uniform →
  // the average.
  const torch::Tensor teacher = torch::tensor({1.0f, 0.5f, 0.0f, 0.5f}).view({1, 2, 1, 2});
  const torch::Tensor student =
      torch::tensor({0.5f, 0.5f, 0.5f, 0.5f}).view({1, 2, 1, 2}).requires_grad_();
  const torch::Tensor q = FusedPrediction(teacher, student);
  EXPECT_TRUE(torch::allclose(q, torch::tensor({1.0f, 0.5f, 0.0f, 0.5f}).view({1, 2, 1, 2})));
  EXPECT_FALSE(q.requires_grad()) << "the student's side is a target, not a gradient path";
  // A confident student against a half-confident teacher: w_T = c_T / (c_T + 1).
  const torch::Tensor t2 = torch::tensor({0.9f, 0.1f}).view({1, 2, 1, 1});
  const torch::Tensor s2 = torch::tensor({0.0f, 1.0f}).view({1, 2, 1, 1});
  const double c_t = 1 + (0.9 * std::log(0.9) + 0.1 * std::log(0.1)) / std::log(2.0);
  const double w_t = c_t / (c_t + 1);
  EXPECT_NEAR(FusedPrediction(t2, s2)[0][0][0][0].item<double>(), w_t * 0.9, 1e-6);
}

TEST(RefinedTargets, SoftMixesTheMaskAndTheFusionByReliability) {
  const torch::Tensor masks = torch::tensor({1L, 0L}).view({2, 1, 1});
  const torch::Tensor fused = torch::tensor({0.2f, 0.8f, 0.6f, 0.4f}).view({2, 2, 1, 1});
  const torch::Tensor y = SoftRefinedTargets(masks, fused, {0.25, 1.0});
  // Image 0: 0.25·(0, 1) + 0.75·(0.2, 0.8) = (0.15, 0.85). Image 1: r = 1 → its mask (1, 0).
  EXPECT_TRUE(torch::allclose(y, torch::tensor({0.15f, 0.85f, 1.0f, 0.0f}).view({2, 2, 1, 1})));
}

TEST(RefinedTargets, HardReplacesOnlyConfidentDisagreements) {
  // Three pixels labelled 0. Teacher: class 1 at 0.9 (confident, disagrees), class 1 at 0.6
  // (disagrees, not confident), class 0 at 0.95 (agrees).
  const torch::Tensor masks = torch::zeros({1, 1, 3}, torch::kLong);
  const torch::Tensor teacher = torch::tensor({0.1f, 0.4f, 0.95f, 0.9f, 0.6f, 0.05f}).view({1, 2, 1, 3});
  const torch::Tensor fused = teacher;
  EXPECT_TRUE(torch::equal(HardRefinedTargets(masks, fused, teacher),
                           torch::tensor({1L, 0L, 0L}).view({1, 1, 3})));
}

TEST(WeightedLoss, IsKendallsSumWithItsGradient) {
  const torch::Tensor s = torch::zeros({3}, torch::requires_grad());
  const torch::Tensor l0 = torch::tensor(2.0, torch::requires_grad());
  const torch::Tensor l1 = torch::tensor(4.0);
  // Terms 0 and 1 present, term 2 absent: ½·2 + ½·4 = 3.
  const torch::Tensor loss = WeightedLoss(s, {l0, l1, std::nullopt});
  EXPECT_DOUBLE_EQ(loss.item<double>(), 3.0);
  loss.backward();
  // ∂/∂s_j = −½·e^{−s_j}·L_j + ½; ∂/∂L_0 = ½·e^{−s_0}.
  EXPECT_DOUBLE_EQ(s.grad()[0].item<double>(), -0.5);
  EXPECT_DOUBLE_EQ(s.grad()[1].item<double>(), -1.5);
  EXPECT_DOUBLE_EQ(s.grad()[2].item<double>(), 0.0) << "an absent term leaves its weight alone";
  EXPECT_DOUBLE_EQ(l0.grad().item<double>(), 0.5);
  // Clamped to [−5, 5]: s = 10 acts as 5, and no gradient pushes it further.
  const torch::Tensor far = torch::full({1}, 10.0, torch::requires_grad());
  const torch::Tensor clamped = WeightedLoss(far, {torch::tensor(1.0)});
  EXPECT_NEAR(clamped.item<double>(), 0.5 * std::exp(-5.0) + 2.5, 1e-6);  // float32
  clamped.backward();
  EXPECT_DOUBLE_EQ(far.grad()[0].item<double>(), 0.0);
}

}  // namespace
}  // namespace splitfed::colearning
