// The learning method's trip from the coordinator to a site: every option the coordinator
// sets arrives at the site as it was (teacher_beta once did not).
#include <gtest/gtest.h>

#include "proto/method_codec.h"

namespace splitfed {
namespace {

// Every option away from its default, so that a field the encoder forgets shows.
SiteRoundMethod Unusual() {
  SiteRoundMethod m;
  m.options.kind = MethodKind::kColearning;
  m.options.refinement = RefinementMode::kHard;
  m.options.kappa = 0.65;
  m.options.consistency = true;
  m.options.learned_loss_weights = true;
  m.options.threshold.tau_min = 0.55;
  m.options.threshold.min_gap = 0.125;
  m.options.threshold.fixed_tau = true;
  m.options.threshold.detection = colearning::DetectionMode::kRelative;
  m.options.threshold.separation = 1.75;
  m.options.distillation_weight = 0.3;
  m.options.teacher_beta = 0.9;
  m.warming_up = true;
  m.consistency_weight = 0.42;
  m.distil = true;
  return m;
}

TEST(MethodCodec, EveryWireFieldIsWritten) {
  v1::SiteMethod wire;
  EncodeSiteMethod(Unusual(), &wire);
  // proto3 scalars have no presence: HasField is true exactly when the value is not the
  // default, which Unusual() avoids for every option.
  const auto* descriptor = v1::SiteMethod::descriptor();
  const auto* reflection = v1::SiteMethod::GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i)
    EXPECT_TRUE(reflection->HasField(wire, descriptor->field(i)))
        << descriptor->field(i)->name() << " is not carried to the site";
}

TEST(MethodCodec, TheSiteGetsBackEveryOption) {
  const SiteRoundMethod sent = Unusual();
  v1::SiteMethod wire;
  EncodeSiteMethod(sent, &wire);
  // Through bytes, as over gRPC.
  v1::SiteMethod parsed;
  ASSERT_TRUE(parsed.ParseFromString(wire.SerializeAsString()));
  absl::StatusOr<SiteRoundMethod> got = DecodeSiteMethod(parsed);
  ASSERT_TRUE(got.ok()) << got.status();
  const MethodOptions& a = sent.options;
  const MethodOptions& b = got->options;
  EXPECT_EQ(b.kind, a.kind);
  EXPECT_EQ(b.refinement, a.refinement);
  EXPECT_DOUBLE_EQ(b.kappa, a.kappa);
  EXPECT_EQ(b.consistency, a.consistency);
  EXPECT_EQ(b.learned_loss_weights, a.learned_loss_weights);
  EXPECT_DOUBLE_EQ(b.threshold.tau_min, a.threshold.tau_min);
  EXPECT_DOUBLE_EQ(b.threshold.min_gap, a.threshold.min_gap);
  EXPECT_EQ(b.threshold.fixed_tau, a.threshold.fixed_tau);
  EXPECT_EQ(b.threshold.detection, a.threshold.detection);
  EXPECT_DOUBLE_EQ(b.threshold.separation, a.threshold.separation);
  EXPECT_DOUBLE_EQ(b.distillation_weight, a.distillation_weight);
  EXPECT_DOUBLE_EQ(b.teacher_beta, a.teacher_beta);
  EXPECT_EQ(got->warming_up, sent.warming_up);
  EXPECT_DOUBLE_EQ(got->consistency_weight, sent.consistency_weight);
  EXPECT_EQ(got->distil, sent.distil);
}

TEST(MethodCodec, EveryMethodAndModeSurvivesTheTrip) {
  for (MethodKind kind : AllMethods())
    for (RefinementMode r : {RefinementMode::kSoft, RefinementMode::kHard, RefinementMode::kOff})
      for (auto d : {colearning::DetectionMode::kAbsolute, colearning::DetectionMode::kRelative}) {
        SiteRoundMethod m;
        m.options.kind = kind;
        m.options.refinement = r;
        m.options.threshold.detection = d;
        v1::SiteMethod wire;
        EncodeSiteMethod(m, &wire);
        absl::StatusOr<SiteRoundMethod> got = DecodeSiteMethod(wire);
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_EQ(got->options.kind, kind);
        EXPECT_EQ(got->options.refinement, r);
        EXPECT_EQ(got->options.threshold.detection, d);
      }
}

TEST(MethodCodec, ASiteRefusesWhatItCannotFollow) {
  v1::SiteMethod wire;
  EncodeSiteMethod(Unusual(), &wire);
  v1::SiteMethod unknown_kind = wire;
  unknown_kind.set_kind(static_cast<v1::SiteMethod::Kind>(17));
  EXPECT_EQ(DecodeSiteMethod(unknown_kind).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(DecodeSiteMethod(unknown_kind).status().message().find("method kind 17"),
            std::string::npos);
  v1::SiteMethod unknown_refinement = wire;
  unknown_refinement.set_refinement(static_cast<v1::SiteMethod::Refinement>(9));
  EXPECT_EQ(DecodeSiteMethod(unknown_refinement).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::SiteMethod unknown_detection = wire;
  unknown_detection.set_detection(static_cast<v1::SiteMethod::Detection>(5));
  EXPECT_EQ(DecodeSiteMethod(unknown_detection).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::SiteMethod bad_beta = wire;
  bad_beta.set_teacher_beta(1.5);
  EXPECT_NE(DecodeSiteMethod(bad_beta).status().message().find("teacher_beta"), std::string::npos);
  v1::SiteMethod bad_weight = wire;
  bad_weight.set_consistency_weight(std::nan(""));
  EXPECT_NE(DecodeSiteMethod(bad_weight).status().message().find("consistency weight"),
            std::string::npos);
}

}  // namespace
}  // namespace splitfed
