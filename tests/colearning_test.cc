// SplitFed-CL's formulas and the site objectives on small hand-made tensors with exact
// expected values.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "colearning/refinement.h"
#include "colearning/reliability.h"
#include "colearning/site_objective.h"
#include "split/loss.h"
#include "tests/refusal.h"

namespace splitfed::colearning {
namespace {

using test_refusal::Refused;

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
  EXPECT_TRUE(
      Refused(FitTwoGaussians({1.0}), absl::StatusCode::kInvalidArgument, "needs 2 values, got 1"));
  EXPECT_TRUE(Refused(FitTwoGaussians({1.0, std::nan("")}), absl::StatusCode::kInvalidArgument,
                      "not finite"));
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

TEST(ReliableImages, RelativeDetectionJudgesBySiteAloneAndNeedsTwoClearPopulations) {
  ThresholdOptions relative;
  relative.detection = DetectionMode::kRelative;
  // A mediocre teacher: every image agrees with it below τ_min. The brief's rule then flags
  // all of them; the relative rule keeps the low-loss component.
  const std::vector<double> mediocre(8, 0.5);
  const std::vector<bool> absolute = ReliableImages(kBimodal, mediocre, ThresholdOptions{});
  EXPECT_EQ(std::count(absolute.begin(), absolute.end(), true), 0);
  EXPECT_EQ(ReliableImages(kBimodal, mediocre, relative),
            (std::vector<bool>{true, true, true, true, true, false, false, false}));
  // One broad population whose mixture means are more than δ apart but overlap (Ashman's D
  // below 2): nothing is flagged.
  const std::vector<double> broad = {0.30, 0.45, 0.55, 0.60, 0.65, 0.70, 0.80, 0.95};
  const TwoGaussians fit = *FitTwoGaussians(broad);
  ASSERT_GT(fit.mean[1] - fit.mean[0], relative.min_gap);
  ASSERT_LT(AshmanD(fit), 2.0);
  const std::vector<bool> kept = ReliableImages(broad, mediocre, relative);
  EXPECT_EQ(std::count(kept.begin(), kept.end(), true), 8);
  EXPECT_GT(AshmanD(*FitTwoGaussians(kBimodal)), 2.0);
}

TEST(WarmUpTracker, EndsTheWarmUpWhenValidationLossStopsImproving) {
  MethodOptions m;
  m.kind = MethodKind::kColearning;
  m.warmup_rounds = 10;
  m.warmup_patience = 2;
  m.ramp_rounds = 4;
  WarmUpTracker t(m);
  EXPECT_TRUE(t.WarmingUp(1));
  EXPECT_FALSE(t.Observe(1, 1.0));
  EXPECT_FALSE(t.Observe(2, 0.8));   // a new low
  EXPECT_FALSE(t.Observe(3, 0.85));  // one round without
  EXPECT_TRUE(t.Observe(4, 0.81));   // two: round 4 is the warm-up's last
  EXPECT_EQ(t.end(), 4);
  EXPECT_TRUE(t.WarmingUp(4));
  EXPECT_FALSE(t.WarmingUp(5));
  EXPECT_DOUBLE_EQ(t.ConsistencyWeight(4), 0.0);
  EXPECT_DOUBLE_EQ(t.ConsistencyWeight(5), std::exp(-5.0 * 0.75 * 0.75)) << "ramp from round 4";
  EXPECT_FALSE(t.Observe(6, 0.1)) << "after the warm-up nothing changes";
  EXPECT_EQ(t.end(), 4);
  // Without patience it lasts warmup_rounds; a method without a teacher never warms up.
  m.warmup_patience = 0;
  WarmUpTracker fixed(m);
  for (int64_t r = 1; r <= 10; ++r) EXPECT_FALSE(fixed.Observe(r, 1.0 + r));
  EXPECT_TRUE(fixed.WarmingUp(10));
  EXPECT_FALSE(fixed.WarmingUp(11));
  m.kind = MethodKind::kSplitFed;
  EXPECT_FALSE(WarmUpTracker(m).WarmingUp(1));
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

// ---- The site objectives (colearning/site_objective.h) ----------------------------------------

TEST(BoundaryNoise, CountsDisagreementsInTheBandAroundEitherBoundary) {
  // One 1×5 row. Teacher 0 0 1 1 1, mask 0 1 1 1 1: boundary pixels are {1, 2} (teacher) and
  // {0, 1} (mask); the band of width 1 around them is {0, 1, 2, 3}; they differ at pixel 1.
  const torch::Tensor teacher = torch::tensor({0, 0, 1, 1, 1}).view({1, 1, 5});
  const torch::Tensor mask = torch::tensor({0, 1, 1, 1, 1}).view({1, 1, 5});
  EXPECT_DOUBLE_EQ(BoundaryNoise(teacher, mask, 1), 0.25);
  EXPECT_DOUBLE_EQ(BoundaryNoise(teacher, teacher, 1), 0.0);
  // An image with no boundary at all does not count; none at all gives 0.
  EXPECT_DOUBLE_EQ(BoundaryNoise(torch::zeros({1, 1, 5}, torch::kLong),
                                 torch::zeros({1, 1, 5}, torch::kLong), 1),
                   0.0);
}

TEST(DistillationObjective, BlendsTheSegmentationLossWithTheKlToTheTeacher) {
  TeacherOutputs teacher;
  teacher.probs = torch::tensor({0.8f, 0.2f}).view({1, 2, 1, 1});
  DistillationObjective objective(teacher, 0.5);
  const torch::Tensor logits = torch::zeros({1, 2, 1, 1});
  const torch::Tensor mask = torch::zeros({1, 1, 1}, torch::kLong);
  const double kl = 0.8 * std::log(0.8 / 0.5) + 0.2 * std::log(0.2 / 0.5);
  const double expected = 0.5 * SegmentationLoss(logits, mask).item<double>() + 0.5 * kl;
  EXPECT_NEAR(objective.Loss(torch::tensor({0}), logits, mask).item<double>(), expected, 1e-6);
}

// Two 1×2×2 images with 2 classes: the teacher agrees with image 0's mask and contradicts
// image 1's, so with a fixed τ image 0 is reliable (r = 1) and image 1 is not (r = 0).
struct TwoImages {
  SegmentationSet set;
  TeacherOutputs teacher;
  TwoImages() {
    set.images = torch::rand({2, 1, 2, 2});
    set.masks = torch::tensor({1, 0, 0, 0, 1, 1, 0, 0}).view({2, 2, 2});
    set.num_classes = 2;
    teacher.labels = torch::tensor({1, 0, 0, 0, 0, 0, 1, 1}).view({2, 2, 2});
    teacher.probs = torch::one_hot(teacher.labels, 2).permute({0, 3, 1, 2}).to(torch::kFloat) * 0.8 + 0.1;
    teacher.losses = {0.1, 2.0};
  }
};

CoLearningRound FixedTauRound() {
  CoLearningRound r;
  r.threshold.fixed_tau = true;
  r.consistency = false;
  r.learned_loss_weights = false;
  return r;
}

TEST(CoLearningObjective, KeepsReliableMasksAndRefinesTheOthersTowardsTheFusion) {
  TwoImages d;
  CoLearningObjective objective(FixedTauRound(), d.teacher, d.set, torch::zeros({3}));
  EXPECT_EQ(objective.reliability(), (std::vector<double>{1.0, 0.0}));
  EXPECT_EQ(objective.reliable(), (std::vector<bool>{true, false}));
  EXPECT_DOUBLE_EQ(objective.site_reliability(), 0.5);
  const torch::Tensor logits = torch::randn({2, 2, 2, 2});
  const torch::Tensor idx = torch::tensor({0, 1});
  // s = 0: ½·L_rel + ½·L_unrel, with r_1 = 0 so ỹ_1 is the fusion itself.
  const torch::Tensor fused =
      FusedPrediction(d.teacher.probs.slice(0, 1, 2), torch::softmax(logits.slice(0, 1, 2), 1));
  const double expected =
      0.5 * SegmentationLoss(logits.slice(0, 0, 1), d.set.masks.slice(0, 0, 1)).item<double>() +
      0.5 * SegmentationLoss(logits.slice(0, 1, 2), fused).item<double>();
  EXPECT_NEAR(objective.Loss(idx, logits, d.set.masks).item<double>(), expected, 1e-6);
  EXPECT_TRUE(objective.parameters().empty()) << "fixed weights are not trained";

  // Ablation: no refinement drops the unreliable image.
  CoLearningRound off = FixedTauRound();
  off.refinement = RefinementMode::kOff;
  CoLearningObjective dropping(off, d.teacher, d.set, torch::zeros({3}));
  EXPECT_NEAR(dropping.Loss(idx, logits, d.set.masks).item<double>(),
              0.5 * SegmentationLoss(logits.slice(0, 0, 1), d.set.masks.slice(0, 0, 1)).item<double>(),
              1e-6);
  // Warm-up: every image reliable, its own mask.
  CoLearningRound warm = FixedTauRound();
  warm.warming_up = true;
  CoLearningObjective warming(warm, d.teacher, d.set, torch::zeros({3}));
  EXPECT_DOUBLE_EQ(warming.site_reliability(), 1.0);
  EXPECT_NEAR(warming.Loss(idx, logits, d.set.masks).item<double>(),
              0.5 * SegmentationLoss(logits, d.set.masks).item<double>(), 1e-6);
}

TEST(CoLearningObjective, AddsAPerturbedCopyForConsistencyAndLearnsTheLossWeights) {
  TwoImages d;
  CoLearningRound round = FixedTauRound();
  round.consistency = true;
  round.consistency_weight = 0.5;
  round.learned_loss_weights = true;
  round.refinement = RefinementMode::kOff;
  CoLearningObjective objective(round, d.teacher, d.set, torch::tensor({0.0f, 0.0f, 1.0f}));
  const torch::Tensor idx = torch::tensor({0, 1});
  const torch::Tensor inputs = objective.Inputs(idx, d.set.images);
  ASSERT_EQ(inputs.size(0), 4);
  EXPECT_TRUE(torch::equal(inputs.slice(0, 0, 2), d.set.images)) << "the clean batch first";
  EXPECT_FALSE(torch::equal(inputs.slice(0, 2, 4), d.set.images));
  const torch::Tensor logits = torch::randn({4, 2, 2, 2}, torch::requires_grad());
  const double rel = SegmentationLoss(logits.slice(0, 0, 1), d.set.masks.slice(0, 0, 1)).item<double>();
  const double cons = 0.5 * (torch::softmax(logits.slice(0, 2, 4), 1) - d.teacher.probs)
                                .pow(2).sum(1).mean().item<double>();
  // Σ ½·e^(−s_j)·L_j + ½·s_j with s = (0, –, 1).
  const torch::Tensor loss = objective.Loss(idx, logits, d.set.masks);
  EXPECT_NEAR(loss.item<double>(), 0.5 * rel + 0.5 * std::exp(-1.0) * cons + 0.5, 1e-6);
  ASSERT_EQ(objective.parameters().size(), 1u);
  loss.backward();
  const torch::Tensor grad = objective.parameters()[0].grad();
  // ∂/∂s_j = ½ − ½·e^(−s_j)·L_j; the absent unreliable term has none.
  EXPECT_NEAR(grad[0].item<double>(), 0.5 - 0.5 * rel, 1e-6);
  EXPECT_EQ(grad[1].item<double>(), 0.0);
  EXPECT_NEAR(grad[2].item<double>(), 0.5 - 0.5 * std::exp(-1.0) * cons, 1e-6);
}

TEST(Perturb, KeepsTheShapeIsSeededAndChangesTheImages) {
  const torch::Tensor images = torch::rand({3, 1, 8, 8});
  std::mt19937_64 a(7), b(7), c(8);
  const torch::Tensor pa = Perturb(images, a), pb = Perturb(images, b), pc = Perturb(images, c);
  EXPECT_EQ(pa.sizes(), images.sizes());
  EXPECT_TRUE(torch::equal(pa, pb)) << "same seed, same perturbation";
  EXPECT_FALSE(torch::equal(pa, pc));
  EXPECT_FALSE(torch::equal(pa, images));
  // Mild: contrast, ±0.15 brightness, blur and σ ≤ 0.05 keep images within about 0.4 of the
  // originals on a [0, 1] range.
  EXPECT_LT((pa - images).abs().max().item<double>(), 0.8);
}

}  // namespace
}  // namespace splitfed::colearning
