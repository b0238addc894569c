// The split U-Net must compute exactly what the whole U-Net computes; losses match hand values.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "split/adam.h"
#include "split/loss.h"
#include "split/model_state.h"
#include "split/split_step.h"
#include "split/trainer.h"
#include "split/unet.h"
#include "tests/refusal.h"

namespace splitfed {
namespace {

using test_refusal::Refused;

struct Case {
  const char* split;
  int64_t depth;
};

class SplitEquivalence : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    torch::set_num_threads(1);
    torch::manual_seed(7);
  }
};

TEST_P(SplitEquivalence, ForwardLossAndEveryGradientMatchTheWholeNet) {
  const Case c = GetParam();
  UNetConfig config;
  config.in_channels = 2;
  config.num_classes = 3;
  config.base_width = 4;
  config.depth = c.depth;
  const SplitSpec spec = *SplitSpec::Parse(c.split);
  ASSERT_TRUE(spec.Validate(config).ok());

  UNetSegment whole = MakeUNet(config);
  SplitModel split = MakeSplitModel(config, spec);
  CopyStateByName(*whole, *split.front);
  CopyStateByName(*whole, *split.body);
  CopyStateByName(*whole, *split.back);

  // Every parameter of the whole net lives in exactly one part.
  EXPECT_EQ(whole->parameters().size(), split.front->parameters().size() +
                                            split.body->parameters().size() +
                                            split.back->parameters().size());

  const int64_t size = 32;
  const torch::Tensor x = torch::randn({3, config.in_channels, size, size});
  const torch::Tensor y = torch::randint(0, config.num_classes, {3, size, size}, torch::kLong);

  const torch::Tensor whole_logits = whole->forward(x);
  const torch::Tensor whole_loss = SegmentationLoss(whole_logits, y);
  whole_loss.backward();

  ClientStep client(split.front, split.back);
  ServerStep server(split.body);
  const torch::Tensor a1 = client.Forward(x);
  const torch::Tensor a2 = server.Forward(a1);
  const ActivationShapes shapes = *CutShapes(config, spec, size, size);
  EXPECT_EQ(a1.sizes().slice(1).vec(), shapes.a1);
  EXPECT_EQ(a2.sizes().slice(1).vec(), shapes.a2);
  EXPECT_FALSE(a1.requires_grad()) << "what travels must be a plain tensor";
  const auto back = client.Backward(
      a2, [&](const torch::Tensor& logits) { return SegmentationLoss(logits, y); });
  EXPECT_EQ(back.g2.sizes(), a2.sizes());
  const torch::Tensor g1 = server.Backward(back.g2);
  EXPECT_EQ(g1.sizes(), a1.sizes());
  client.FinishBackward(g1);

  EXPECT_TRUE(torch::allclose(back.logits, whole_logits.detach(), 1e-5, 1e-5));
  EXPECT_NEAR(back.loss, whole_loss.item<double>(), 1e-5);

  int64_t compared = 0;
  const auto whole_params = whole->named_parameters();
  for (UNetSegment part : {split.front, split.body, split.back}) {
    for (const auto& p : part->named_parameters()) {
      const torch::Tensor* ref = whole_params.find(p.key());
      ASSERT_NE(ref, nullptr) << p.key();
      ASSERT_TRUE(p.value().grad().defined()) << p.key() << " got no gradient";
      const double diff = (p.value().grad() - ref->grad()).abs().max().item<double>();
      EXPECT_LE(diff, 1e-5) << p.key();
      ++compared;
    }
    // BatchNorm running statistics took the same update.
    const auto whole_buffers = whole->named_buffers();
    for (const auto& b : part->named_buffers()) {
      const torch::Tensor* ref = whole_buffers.find(b.key());
      ASSERT_NE(ref, nullptr) << b.key();
      EXPECT_TRUE(torch::allclose(b.value().to(torch::kDouble), ref->to(torch::kDouble), 1e-6,
                                  1e-6))
          << b.key();
    }
  }
  EXPECT_EQ(compared, static_cast<int64_t>(whole_params.size()));
}

INSTANTIATE_TEST_SUITE_P(PresetsAndDepths, SplitEquivalence,
                         ::testing::Values(Case{"deep", 2}, Case{"deep", 4}, Case{"shallow", 2},
                                           Case{"shallow", 4}, Case{"6,7", 3}),
                         [](const auto& info) {
                           std::string name = info.param.split;
                           for (char& ch : name)
                             if (ch == ',') ch = '_';
                           return "split_" + name + "_depth" + std::to_string(info.param.depth);
                         });

// The fused Adam must follow LibTorch's Adam: same moments, bias corrections and ε, step by
// step, on tensors large enough to be split between threads and on one that gets no gradient.
TEST(Adam, FollowsLibTorchsAdamStepByStep) {
  torch::set_num_threads(2);
  torch::manual_seed(5);
  auto make = [] {
    std::vector<torch::Tensor> ps = {torch::randn({300, 700}), torch::randn({17}),
                                     torch::randn({4, 4})};
    for (auto& p : ps) p.requires_grad_(true);
    return ps;
  };
  std::vector<torch::Tensor> ours = make();
  std::vector<torch::Tensor> theirs;
  for (const auto& p : ours) theirs.push_back(p.detach().clone().requires_grad_(true));
  const AdamOptions options{3e-3, 0.8, 0.99, 1e-6};
  Adam adam(ours, options);
  torch::optim::Adam reference(theirs, torch::optim::AdamOptions(options.learning_rate)
                                           .betas({options.beta1, options.beta2})
                                           .eps(options.epsilon));
  for (int step = 0; step < 25; ++step) {
    adam.ZeroGrad();
    reference.zero_grad();
    // The last tensor takes part only from step 10 on: until then it has no gradient and
    // must not move (nor count steps, which its bias corrections would show).
    const size_t trained = step < 10 ? 2 : 3;
    for (size_t i = 0; i < trained; ++i) {
      // Gradients of both signs and of very different sizes, so ε and sqrt(v) both matter.
      const torch::Tensor g = torch::randn_like(ours[i]) * std::pow(10.0, (step % 5) - 3);
      ours[i].mutable_grad() = g.clone();
      theirs[i].mutable_grad() = g.clone();
    }
    adam.Step();
    reference.step();
    for (size_t i = 0; i < ours.size(); ++i)
      ASSERT_TRUE(torch::allclose(ours[i], theirs[i], /*rtol=*/1e-5, /*atol=*/1e-6))
          << "tensor " << i << " after step " << step << ": max difference "
          << (ours[i] - theirs[i]).abs().max().item<float>();
  }
  // ZeroGrad keeps the gradients but zeroes them.
  adam.ZeroGrad();
  for (const auto& p : ours) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_EQ(p.grad().abs().sum().item<float>(), 0.0f);
  }
}

TEST(Adam, RefusesTensorsItCannotUpdate) {
  EXPECT_THROW(Adam({torch::zeros({3}, torch::kDouble).requires_grad_(true)}, {}), c10::Error);
  EXPECT_THROW(Adam({torch::zeros({3})}, {}), c10::Error);  // no grad required
  EXPECT_THROW(Adam({torch::zeros({4, 4}).t().requires_grad_(true)}, {}), c10::Error);
}

// The coordinator sends g1 before its body's optimiser steps; the step taken later (explicitly,
// by the next call, or on reading the body) must leave the same weights as stepping at once.
TEST(LocalBody, DeferredStepEndsWhereAnImmediateStepDoes) {
  torch::set_num_threads(1);
  const UNetConfig config{1, 2, 4, 2};
  torch::manual_seed(3);
  SplitModel a = MakeSplitModel(config, SplitSpec::Deep());
  torch::manual_seed(3);
  SplitModel b = MakeSplitModel(config, SplitSpec::Deep());
  LocalBody immediate(a.body, 1e-2);
  LocalBody deferred(b.body, 1e-2);
  const auto shapes = *CutShapes(config, SplitSpec::Deep(), 16, 16);
  auto batch = [](const std::vector<int64_t>& per_image, int64_t seed) {
    torch::manual_seed(seed);
    std::vector<int64_t> shape = {2};
    shape.insert(shape.end(), per_image.begin(), per_image.end());
    return torch::randn(shape);
  };
  for (int step = 0; step < 3; ++step) {
    const torch::Tensor a1 = batch(shapes.a1, 10 + step), g2 = batch(shapes.a2, 20 + step);
    ASSERT_TRUE(torch::equal(*immediate.Forward(a1), *deferred.Forward(a1))) << "step " << step;
    const NamedTensors before = ExtractState(*b.body);
    const torch::Tensor g1 = *immediate.Backward(g2);
    ASSERT_TRUE(torch::equal(g1, *deferred.BackwardDeferringStep(g2)));
    // Not stepped yet: the weights are still the ones that produced g1.
    for (const auto& [name, t] : ExtractState(*b.body))
      ASSERT_TRUE(torch::equal(t, before.at(name))) << name << " moved before FinishStep";
    if (step == 0) deferred.FinishStep();  // later steps: the next Forward, then body()
  }
  const NamedTensors want = ExtractState(*a.body);
  const NamedTensors got = ExtractState(*deferred.body());
  ASSERT_EQ(want.size(), got.size());
  for (const auto& [name, t] : want) EXPECT_TRUE(torch::equal(t, got.at(name))) << name;
}

// The sparse layouts drop a gradient's elements where its activation is zero. That is exact
// only where the activation comes out of a ReLU (or a max-pool of one): the gradient of a
// zero is then zero whatever arrives for it. Checked at every cut OutputIsRectified accepts:
// the parameters' gradients must be bit for bit those of the full gradient.
TEST(UNet, GradientsOfARectifiedOutputIgnoreItsZeros) {
  torch::set_num_threads(1);
  const UNetConfig config{1, 3, 4, 2};
  const std::vector<UnitSpec> units = UnitSequence(config);
  int checked = 0;
  for (int64_t end = 1; end < static_cast<int64_t>(units.size()); ++end) {
    const UnitKind kind = units[end - 1].kind;
    if (kind == UnitKind::kUpConv || kind == UnitKind::kHead) {
      EXPECT_FALSE(OutputIsRectified(config, end)) << units[end - 1].name;
      continue;
    }
    ASSERT_TRUE(OutputIsRectified(config, end)) << "unit " << end - 1;
    torch::manual_seed(end);
    UNetSegment part(config, 0, end);
    const torch::Tensor x = torch::randn({2, 1, 16, 16});
    auto gradients = [&](const torch::Tensor& g) {
      part->zero_grad();
      part->forward(x).backward(g);
      std::vector<torch::Tensor> out;
      for (const torch::Tensor& p : part->parameters()) out.push_back(p.grad().clone());
      return out;
    };
    torch::Tensor y;
    {
      torch::NoGradGuard no_grad;
      y = part->forward(x);
    }
    const double nonzero = y.ne(0).to(torch::kFloat).mean().item<double>();
    ASSERT_LT(nonzero, 0.95) << "unit " << end - 1 << ": too few zeros to tell";
    const torch::Tensor g = torch::randn_like(y);
    const std::vector<torch::Tensor> full = gradients(g);
    const std::vector<torch::Tensor> on_support = gradients(g * y.ne(0));
    ASSERT_EQ(full.size(), on_support.size());
    for (size_t i = 0; i < full.size(); ++i)
      ASSERT_TRUE(torch::equal(full[i], on_support[i])) << "cut after unit " << end - 1;
    ++checked;
  }
  EXPECT_EQ(checked, 12) << "depth 2: 10 convolutions and 2 pools";
}

TEST(SplitSpec, PresetsCutWhereTheAlgorithmSays) {
  UNetConfig config;  // f = 16, depth 4
  const auto deep = *CutShapes(config, SplitSpec::Deep(), 128, 128);
  EXPECT_EQ(deep.a1, (std::vector<int64_t>{16, 64, 64}));  // enc1 + pool
  EXPECT_EQ(deep.a2, (std::vector<int64_t>{32, 64, 64}));  // dec2 output at H/2
  const auto shallow = *CutShapes(config, SplitSpec::Shallow(), 128, 128);
  EXPECT_EQ(shallow.a1, (std::vector<int64_t>{16, 128, 128}));
  EXPECT_EQ(shallow.a2, (std::vector<int64_t>{16, 128, 128}));
  // 27 units; the deep back keeps up0, dec0's two convolutions and the head.
  EXPECT_EQ(SplitSpec::Deep().BodyEnd(config), 23);
  // Both presets send activations straight out of a ReLU (a1 via a max-pool of one for
  // deep), so both travel sparse.
  for (const SplitSpec& split : {SplitSpec::Deep(), SplitSpec::Shallow()}) {
    const RectifiedCuts cuts = CutsRectified(config, split);
    EXPECT_TRUE(cuts.a1) << split.front_units << "," << split.back_units;
    EXPECT_TRUE(cuts.a2) << split.front_units << "," << split.back_units;
  }
  // A body ending in an up-convolution (depth 2: ... up1 | dec1_conv1 ...) is not rectified,
  // while its front is.
  UNetConfig depth2;
  depth2.depth = 2;
  const RectifiedCuts after_up = CutsRectified(depth2, SplitSpec{3, 6});
  EXPECT_TRUE(after_up.a1);
  EXPECT_FALSE(after_up.a2);
}

TEST(SplitSpec, RejectsCutsThatBreakASkipOrLeaveAnEmptyPart) {
  UNetConfig config;
  config.depth = 2;  // 15 units
  EXPECT_TRUE((SplitSpec{3, 4}).Validate(config).ok());
  // The front keeps enc0's skip but up0/dec0 are in the body: the skip would cross the cut.
  const absl::Status crossing = (SplitSpec{3, 2}).Validate(config);
  EXPECT_TRUE(Refused(crossing, absl::StatusCode::kInvalidArgument));
  EXPECT_NE(crossing.message().find("skip"), std::string::npos) << crossing;
  EXPECT_TRUE((SplitSpec{2, 4}).Validate(config).ok());  // the pool may run on the coordinator
  EXPECT_TRUE(Refused((SplitSpec{0, 1}).Validate(config), absl::StatusCode::kInvalidArgument,
                      "leaves an empty part"));
  EXPECT_TRUE(Refused((SplitSpec{7, 8}).Validate(config), absl::StatusCode::kInvalidArgument,
                      "leaves an empty part"));
  EXPECT_TRUE(
      Refused(SplitSpec::Parse("middle"), absl::StatusCode::kInvalidArgument, "got 'middle'"));
  EXPECT_TRUE(Refused(SplitSpec::Parse("3;4"), absl::StatusCode::kInvalidArgument, "got '3;4'"));
  EXPECT_TRUE(Refused(CutShapes(config, SplitSpec::Deep(), 30, 32),
                      absl::StatusCode::kInvalidArgument,
                      "must be a positive multiple of 4"));  // not a multiple of 4
}

TEST(UNet, ConfigValidationNamesTheField) {
  UNetConfig config;
  config.depth = 9;
  EXPECT_NE(config.Validate().message().find("depth"), std::string::npos);
  config = UNetConfig();
  config.num_classes = 1;
  EXPECT_NE(config.Validate().message().find("num_classes"), std::string::npos);
}

// Losses on tensors small enough to compute by hand.
TEST(Loss, SoftDiceByHand) {
  // One image, 2 classes, 1×2 pixels. p = [[0.8, 0.4], [0.2, 0.6]] (class × pixel),
  // t = one-hot of labels [0, 1] = [[1, 0], [0, 1]].
  const torch::Tensor p = torch::tensor({0.8f, 0.4f, 0.2f, 0.6f}).view({1, 2, 1, 2});
  const torch::Tensor t = torch::tensor({1.f, 0.f, 0.f, 1.f}).view({1, 2, 1, 2});
  // class 0: 2·0.8 / (1.2 + 1) = 1.6/2.2; class 1: 2·0.6 / (0.8 + 1) = 1.2/1.8.
  const double expected = 1.0 - 0.5 * (1.6 / 2.2 + 1.2 / 1.8);
  EXPECT_NEAR(SoftDiceLoss(p, t, 0.0).item<double>(), expected, 1e-6);
}

TEST(Loss, CrossEntropyHardAndSoftByHand) {
  // Logits for 2 pixels, 2 classes: pixel A (0, ln 3) → softmax (1/4, 3/4);
  // pixel B (0, 0) → (1/2, 1/2).
  const float ln3 = std::log(3.f);
  const torch::Tensor logits = torch::tensor({0.f, 0.f, ln3, 0.f}).view({1, 2, 1, 2});
  const torch::Tensor hard = torch::tensor({int64_t{1}, int64_t{0}}).view({1, 1, 2});
  // Hard: −(ln 3/4 + ln 1/2) / 2.
  const double ce_hard = -(std::log(0.75) + std::log(0.5)) / 2;
  EXPECT_NEAR(SoftCrossEntropy(logits, TargetProbabilities(hard, 2)).item<double>(), ce_hard,
              1e-6);
  // Soft target (0.5, 0.5) at A and (0.2, 0.8) at B.
  const torch::Tensor soft = torch::tensor({0.5f, 0.2f, 0.5f, 0.8f}).view({1, 2, 1, 2});
  const double ce_soft =
      -((0.5 * std::log(0.25) + 0.5 * std::log(0.75)) + (0.2 * std::log(0.5) + 0.8 * std::log(0.5))) /
      2;
  EXPECT_NEAR(SoftCrossEntropy(logits, soft).item<double>(), ce_soft, 1e-6);

  // The combined loss with λ_ce = 1: Dice on softmax + CE, hard target.
  // softmax: class 0 = (1/4, 1/2), class 1 = (3/4, 1/2); one-hot: class 0 = (0, 1), class 1 = (1, 0).
  const double dice0 = 2 * 0.5 / (0.75 + 1), dice1 = 2 * 0.75 / (1.25 + 1);
  const double expected = 1 - 0.5 * (dice0 + dice1) + ce_hard;
  SegLossOptions no_smoothing;
  no_smoothing.dice_smooth = 0.0;
  EXPECT_NEAR(SegmentationLoss(logits, hard, no_smoothing).item<double>(), expected, 1e-6);
}

TEST(Loss, PerfectPredictionHasZeroDiceLoss) {
  const torch::Tensor t = torch::tensor({1.f, 0.f, 0.f, 1.f}).view({1, 2, 1, 2});
  EXPECT_NEAR(SoftDiceLoss(t, t, 1e-5).item<double>(), 0.0, 1e-7);
}

TEST(Loss, RejectsMismatchedTargets) {
  const torch::Tensor logits = torch::zeros({1, 3, 2, 2});
  EXPECT_THROW(SegmentationLoss(logits, torch::zeros({1, 2, 2, 2})), c10::Error);
  EXPECT_THROW(SegmentationLoss(logits, torch::zeros({2, 2}, torch::kLong)), c10::Error);
}

TEST(ClientPartsState, RoundTripsTheFrontAndBackAndSkipsOtherEntries) {
  const UNetConfig config{1, 2, 4, 2};
  torch::manual_seed(3);
  SplitModel from = MakeSplitModel(config, SplitSpec::Deep());
  torch::manual_seed(4);
  SplitModel to = MakeSplitModel(config, SplitSpec::Deep());
  NamedTensors state = ClientPartsState(from);
  ASSERT_FALSE(state.empty());
  for (const auto& [name, t] : state)
    EXPECT_TRUE(name.rfind(kFrontPrefix, 0) == 0 || name.rfind(kBackPrefix, 0) == 0) << name;
  EXPECT_EQ(state.size(), ExtractState(*from.front).size() + ExtractState(*from.back).size());
  state[kLossLogVariances] = torch::zeros({3});  // travels beside the parts, is neither's
  ASSERT_TRUE(LoadClientParts(state, to).ok());
  for (const auto& [name, t] : ClientPartsState(to))
    EXPECT_TRUE(torch::equal(t, state.at(name))) << name;
  state.erase(state.begin());
  EXPECT_TRUE(Refused(LoadClientParts(state, to), absl::StatusCode::kInvalidArgument,
                      "lacks 'dec0_conv1.bn.bias'"))
      << "an entry missing is refused";
}

}  // namespace
}  // namespace splitfed
