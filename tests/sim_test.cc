// The simulator: experiment files, the simulated sites' data, and whole runs over both
// transports, with the output folder checked afterwards.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "sim/experiment.h"
#include "sim/report.h"
#include "sim/runner.h"
#include "sim/site_data.h"

#include "tests/test_files.h"
namespace splitfed::sim {
namespace {
namespace fs = std::filesystem;

using test_files::ReadText;

int64_t Lines(const fs::path& p) {
  const std::string text = ReadText(p);
  return std::count(text.begin(), text.end(), '\n');
}

absl::StatusOr<ExperimentConfig> Parse(const std::string& text) {
  return ParseExperiment(text, "test.toml", "/base");
}

std::string ErrorOf(const std::string& text) {
  absl::StatusOr<ExperimentConfig> c = Parse(text);
  return c.ok() ? std::string("(accepted)") : std::string(c.status().message());
}

// Small enough for seconds: 32², depth 3, f = 8.
ExperimentConfig Tiny(const fs::path& out) {
  ExperimentConfig c = DefaultExperiment();
  c.name = "tiny";
  c.out_dir = out.string();
  c.image_size = 32;
  c.depth = 3;
  c.base_width = 8;
  c.sites = 3;
  c.images_per_site = 12;
  c.test_images = 8;
  c.rounds = 2;
  c.local_epochs = 1;
  c.learning_rate = 3e-3;
  c.threads = 1;
  c.methods = {"splitfed", "oracle"};
  SiteNoise noisy{{NoiseModel::kDilation}, 0.5, 1.0, NoiseBias::kMixed};
  c.noise = {{"one noisy", {SiteNoise{}, SiteNoise{}, noisy}}};
  return c;
}

TEST(ExperimentFile, TheDefaultExampleIsTheBuiltInExperiment) {
  // examples/sim-default.toml says it spells out `splitfed sim`: it must stay true.
  absl::StatusOr<ExperimentConfig> file =
      LoadExperiment(std::string(SPLITFED_SOURCE_DIR) + "/examples/sim-default.toml");
  ASSERT_TRUE(file.ok()) << file.status();
  ExperimentConfig built_in = DefaultExperiment();
  built_in.out_dir = file->out_dir;  // the file's is taken from its own folder
  EXPECT_EQ(ExperimentToToml(*file), ExperimentToToml(built_in));
}

TEST(ExperimentFile, TheResolvedFileReadsBackToTheSameExperiment) {
  ExperimentConfig c = DefaultExperiment();
  c.seeds = {3, 4};
  c.out_dir = "/results";
  c.partition = PartitionKind::kQuantity;
  c.noise.push_back({"all dilated", std::vector<SiteNoise>(
                                        c.sites, SiteNoise{{NoiseModel::kDilation, NoiseModel::kMissing},
                                                     0.5, 0.7, NoiseBias::kExpand})});
  const std::string text = ExperimentToToml(c);
  absl::StatusOr<ExperimentConfig> back = ParseExperiment(text, "resolved.toml", "/");
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << text;
  EXPECT_EQ(ExperimentToToml(*back), text);
  EXPECT_EQ(back->noise[1].sites[2].Describe(), "dilation+missing 50% sev 0.7 expand");
}

// Field by field, every value away from its default: a key the writer forgot would read back
// as the default and fail here, where comparing the two texts could not see it.
TEST(ExperimentFile, EveryFieldSurvivesTheRoundTrip) {
  const ExperimentConfig defaults = DefaultExperiment();
  ExperimentConfig c = defaults;
  c.name = "every field";
  c.out_dir = "/results/every";
  c.image_size = 48;
  c.num_classes = 3;
  c.images_per_site = 33;  // (phantoms have one channel: channels stays 1)
  c.test_images = 17;
  c.test_fraction = 0.3;
  c.validation_fraction = 0.15;
  c.partition = PartitionKind::kQuantity;
  c.alpha = 0.7;
  c.min_images = 5;
  c.sites = 3;
  c.rounds = 7;
  c.local_epochs = 2;
  c.batch_size = 6;
  c.learning_rate = 0.00123456789;  // more digits than a stream prints by default
  c.mode = "sflv2";
  c.transport = "mtls";
  c.activation_encoding = "fp16";
  c.base_width = 12;
  c.depth = 3;
  c.split = "shallow";
  c.threads = 2;
  c.methods = {"splitfed-cl", "fednoro", "tuned"};
  c.seeds = {7, 9};
  MethodOptions& m = c.method;
  m.warmup_rounds = 4;
  m.warmup_patience = 2;
  m.teacher_beta = 0.9;
  m.ramp_rounds = 6;
  m.threshold.detection = colearning::DetectionMode::kRelative;
  m.threshold.fixed_tau = true;
  m.threshold.tau_min = 0.7;
  m.threshold.min_gap = 0.04;
  m.threshold.separation = 2.5;
  m.kappa = 0.65;
  m.refinement = RefinementMode::kHard;
  m.consistency = false;
  m.learned_loss_weights = false;
  m.distillation_weight = 0.6;
  MethodVariant v;
  v.name = "tuned";
  v.base = "splitfed-cl";
  v.method = defaults.method;
  v.method.kappa = 0.9;
  v.method.refinement = RefinementMode::kOff;
  v.aggregation = "median";
  c.variants = {v};
  c.noise = {{"mixed", {SiteNoise{{NoiseModel::kBoundary}, 0.8, 0.75, NoiseBias::kShrink,
                                  BoundaryAmplitude::kPixels},
                        SiteNoise{}, SiteNoise{{NoiseModel::kErosion, NoiseModel::kMissing}, 0.25,
                                               0.5, NoiseBias::kExpand}}}};

  const std::string text = ExperimentToToml(c);
  absl::StatusOr<ExperimentConfig> read = ParseExperiment(text, "every.toml", "/");
  ASSERT_TRUE(read.ok()) << read.status() << "\n" << text;
  const ExperimentConfig& b = *read;
  EXPECT_EQ(b.name, c.name);
  EXPECT_EQ(b.out_dir, c.out_dir);
  EXPECT_EQ(b.dataset, c.dataset);
  EXPECT_EQ(b.image_size, c.image_size);
  EXPECT_EQ(b.num_classes, c.num_classes);
  EXPECT_EQ(b.channels, c.channels);
  EXPECT_EQ(b.images_per_site, c.images_per_site);
  EXPECT_EQ(b.test_images, c.test_images);
  EXPECT_EQ(b.test_fraction, c.test_fraction);
  EXPECT_EQ(b.validation_fraction, c.validation_fraction);
  EXPECT_EQ(b.partition, c.partition);
  EXPECT_EQ(b.alpha, c.alpha);
  EXPECT_EQ(b.min_images, c.min_images);
  EXPECT_EQ(b.sites, c.sites);
  EXPECT_EQ(b.rounds, c.rounds);
  EXPECT_EQ(b.local_epochs, c.local_epochs);
  EXPECT_EQ(b.batch_size, c.batch_size);
  EXPECT_EQ(b.learning_rate, c.learning_rate);
  EXPECT_EQ(b.mode, c.mode);
  EXPECT_EQ(b.transport, c.transport);
  EXPECT_EQ(b.activation_encoding, c.activation_encoding);
  EXPECT_EQ(b.base_width, c.base_width);
  EXPECT_EQ(b.depth, c.depth);
  EXPECT_EQ(b.split, c.split);
  EXPECT_EQ(b.threads, c.threads);
  EXPECT_EQ(b.methods, c.methods);
  EXPECT_EQ(b.seeds, c.seeds);
  auto expect_same_method = [](const MethodOptions& x, const MethodOptions& y) {
    EXPECT_EQ(x.warmup_rounds, y.warmup_rounds);
    EXPECT_EQ(x.warmup_patience, y.warmup_patience);
    EXPECT_EQ(x.teacher_beta, y.teacher_beta);
    EXPECT_EQ(x.ramp_rounds, y.ramp_rounds);
    EXPECT_EQ(x.threshold.detection, y.threshold.detection);
    EXPECT_EQ(x.threshold.fixed_tau, y.threshold.fixed_tau);
    EXPECT_EQ(x.threshold.tau_min, y.threshold.tau_min);
    EXPECT_EQ(x.threshold.min_gap, y.threshold.min_gap);
    EXPECT_EQ(x.threshold.separation, y.threshold.separation);
    EXPECT_EQ(x.kappa, y.kappa);
    EXPECT_EQ(x.refinement, y.refinement);
    EXPECT_EQ(x.consistency, y.consistency);
    EXPECT_EQ(x.learned_loss_weights, y.learned_loss_weights);
    EXPECT_EQ(x.distillation_weight, y.distillation_weight);
  };
  expect_same_method(b.method, c.method);
  ASSERT_EQ(b.variants.size(), 1u);
  EXPECT_EQ(b.variants[0].name, v.name);
  EXPECT_EQ(b.variants[0].base, v.base);
  EXPECT_EQ(b.variants[0].aggregation, v.aggregation);
  expect_same_method(b.variants[0].method, v.method);
  ASSERT_EQ(b.noise.size(), 1u);
  EXPECT_EQ(b.noise[0].name, "mixed");
  ASSERT_EQ(b.noise[0].sites.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const SiteNoise& x = b.noise[0].sites[i];
    const SiteNoise& y = c.noise[0].sites[i];
    EXPECT_EQ(x.models, y.models) << "site " << i;
    EXPECT_EQ(x.image_fraction, y.image_fraction) << "site " << i;
    EXPECT_EQ(x.severity, y.severity) << "site " << i;
    EXPECT_EQ(x.bias, y.bias) << "site " << i;
    EXPECT_EQ(x.amplitude, y.amplitude) << "site " << i;
  }
}

TEST(ExperimentFile, RelativeDataPathsSurviveTheSavedCopyInAnotherFolder) {
  // `--resume` reads the config.toml saved in the output folder: the data root written
  // there must not be re-resolved against that folder.
  const std::string text = "[data]\nkind = \"folder\"\nroot = \"../data/set\"\n";
  absl::StatusOr<ExperimentConfig> first = ParseExperiment(text, "examples/e.toml", "/work/examples");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->root, "/work/data/set");
  absl::StatusOr<ExperimentConfig> saved =
      ParseExperiment(ExperimentToToml(*first), "results/config.toml", "/elsewhere/results");
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->root, "/work/data/set");
}

TEST(ExperimentFile, VariantsRunAMethodWithOtherOptionsUnderTheirOwnName) {
  auto c = Parse(R"(
[experiment]
methods = ["splitfed", "cl-relative", "cl-median"]
[method]
warmup_rounds = 7
[[variant]]
name = "cl-relative"
base = "splitfed-cl"
detection = "relative"
separation = 2.5
warmup_patience = 3
teacher_beta = 0.5
refinement = "hard"
consistency = false
loss_weights = "fixed"
[[variant]]
name = "cl-median"
base = "splitfed-cl"
aggregation = "median"
)");
  ASSERT_TRUE(c.ok()) << c.status();
  const RunMethod relative = MethodOf("cl-relative", *c);
  EXPECT_EQ(relative.method.kind, MethodKind::kColearning);
  EXPECT_EQ(relative.method.warmup_rounds, 7) << "a variant starts from [method]";
  EXPECT_EQ(relative.method.warmup_patience, 3);
  EXPECT_EQ(relative.method.threshold.detection, colearning::DetectionMode::kRelative);
  EXPECT_DOUBLE_EQ(relative.method.threshold.separation, 2.5);
  EXPECT_DOUBLE_EQ(relative.method.teacher_beta, 0.5);
  EXPECT_EQ(relative.method.refinement, RefinementMode::kHard);
  EXPECT_FALSE(relative.method.consistency);
  EXPECT_FALSE(relative.method.learned_loss_weights);
  EXPECT_EQ(relative.aggregation, "");
  EXPECT_EQ(MethodOf("cl-median", *c).aggregation, "median");
  EXPECT_EQ(MethodOf("splitfed-cl-fedavg", *c).aggregation, "fedavg") << "built-in names still work";
  // The resolved file keeps the variants.
  const std::string text = ExperimentToToml(*c);
  auto back = ParseExperiment(text, "resolved.toml", "/");
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << text;
  EXPECT_EQ(ExperimentToToml(*back), text);

  EXPECT_NE(ErrorOf("[[variant]]\nname = \"x\"\nbase = \"splitfed-cl\"\ndetektion = \"relative\"\n")
                .find("variant[0].detektion: unknown key"),
            std::string::npos);
  EXPECT_NE(ErrorOf("[[variant]]\nname = \"x\"\nbase = \"fedprox\"\n").find("variant[0].base"),
            std::string::npos);
  EXPECT_NE(ErrorOf("[[variant]]\nname = \"median\"\nbase = \"splitfed\"\n")
                .find("already a method's name"),
            std::string::npos);
  EXPECT_NE(ErrorOf("[[variant]]\nname = \"x\"\nbase = \"splitfed-cl\"\ndetection = \"psychic\"\n")
                .find("variant[0].detection: must be absolute or relative"),
            std::string::npos);
  EXPECT_NE(ErrorOf("[[variant]]\nname = \"x\"\nbase = \"splitfed\"\naggregation = \"mean\"\n")
                .find("variant[0].aggregation: unknown rule 'mean'"),
            std::string::npos);
  EXPECT_NE(ErrorOf("[[noise]]\nname = \"x\"\nmodel = \"boundary\"\namplitude = \"huge\"\n")
                .find("noise[0].amplitude"),
            std::string::npos);
}

TEST(ExperimentFile, ASweepSettingMakesTheLastSitesNoisyWithAlternatingBias) {
  auto c = Parse(R"(
[federation]
sites = 5
[[noise]]
name = "40%"
noisy_sites = 0.4
model = "boundary"
image_fraction = 0.6
)");
  ASSERT_TRUE(c.ok()) << c.status();
  const auto& sites = c->noise.at(0).sites;
  ASSERT_EQ(sites.size(), 5u);
  EXPECT_TRUE(sites[0].clean() && sites[1].clean() && sites[2].clean());
  EXPECT_EQ(sites[3].Describe(), "boundary 60% sev 1 shrink");
  EXPECT_EQ(sites[4].Describe(), "boundary 60% sev 1 expand");
  EXPECT_EQ(c->out_dir, "/base/sim-results") << "relative to the file's folder";
}

TEST(ExperimentFile, UnknownKeysAndBadValuesNameTheKey) {
  EXPECT_NE(ErrorOf("[federation]\nroundz = 3\n").find("federation.roundz: unknown key"),
            std::string::npos);
  EXPECT_NE(ErrorOf("colour = 1\n").find("colour: unknown key"), std::string::npos);
  EXPECT_NE(ErrorOf("[federation]\nrounds = 0\n").find("federation.rounds: must be in [1"),
            std::string::npos);
  EXPECT_NE(ErrorOf("[federation]\nrounds = \"ten\"\n").find("federation.rounds: must be an integer"),
            std::string::npos);
  EXPECT_NE(ErrorOf("[federation]\nmode = \"sflv3\"\n").find("federation.mode"), std::string::npos);
  EXPECT_NE(ErrorOf("[federation]\ntransport = \"tcp\"\n").find("federation.transport"),
            std::string::npos);
  EXPECT_NE(ErrorOf("[experiment]\nmethods = [\"fedprox\"]\n").find("unknown method 'fedprox'"),
            std::string::npos);
  EXPECT_NE(ErrorOf("[data]\nkind = \"dicom\"\n").find("data.kind"), std::string::npos);
  EXPECT_NE(ErrorOf("[data]\nimage_size = 60\n").find("data.image_size"), std::string::npos);
  EXPECT_NE(ErrorOf("[[noise]]\nname = \"x\"\nmodel = \"blur\"\n").find("noise[0].model"),
            std::string::npos);
  EXPECT_NE(ErrorOf("[[noise]]\nname = \"x\"\nsite = [{model = \"erosion\"}]\n").find(
                "noise[0].site: lists 1 sites; the federation has 4"),
            std::string::npos);
  EXPECT_NE(ErrorOf("[[noise]]\nname = \"x\"\nimage_fraction = 1.5\n").find("noise[0].image_fraction"),
            std::string::npos);
  EXPECT_NE(ErrorOf("[data]\nnum_classes = 2\n[[noise]]\nname = \"x\"\nnoisy_sites = 1.0\n"
                    "model = \"confusion\"\n")
                .find("class confusion needs at least 3 classes"),
            std::string::npos);
  EXPECT_NE(ErrorOf("[data]\nkind = \"annotators\"\nroot = \"x\"\n").find("data.annotators"),
            std::string::npos);
  EXPECT_NE(ErrorOf("[data\n").find("test.toml:1"), std::string::npos) << "syntax errors give the line";
}

TEST(SimData, NoiseTouchesExactlyTheChosenImagesAndNeverTheTestSet) {
  ExperimentConfig c = Tiny("/unused");
  c.images_per_site = 20;
  const SimData a = *BuildSimData(c, c.noise[0], 7);
  const SimData b = *BuildSimData(c, c.noise[0], 7);
  ASSERT_EQ(a.sites.size(), 3u);
  for (int k = 0; k < 2; ++k) {
    EXPECT_TRUE(torch::equal(a.sites[k].clean.masks, a.sites[k].annotated.masks));
    EXPECT_EQ(std::count(a.sites[k].corrupted.begin(), a.sites[k].corrupted.end(), true), 0);
  }
  const SiteData& noisy = a.sites[2];
  EXPECT_EQ(std::count(noisy.corrupted.begin(), noisy.corrupted.end(), true), 10);
  for (int64_t i = 0; i < noisy.clean.size(); ++i)
    EXPECT_EQ(!torch::equal(noisy.clean.masks[i], noisy.annotated.masks[i]), bool(noisy.corrupted[i]))
        << "image " << i;
  EXPECT_TRUE(torch::equal(noisy.annotated.masks, b.sites[2].annotated.masks)) << "same seed";
  EXPECT_TRUE(torch::equal(a.test.masks, b.test.masks));
  EXPECT_EQ(a.test.size(), 8);
  const SimData other = *BuildSimData(c, c.noise[0], 8);
  EXPECT_FALSE(torch::equal(a.sites[0].clean.images, other.sites[0].clean.images));
}

TEST(SimData, PartitionsShapeTheSites) {
  ExperimentConfig c = Tiny("/unused");
  c.images_per_site = 30;
  c.partition = PartitionKind::kQuantity;
  c.alpha = 0.3;
  c.min_images = 4;
  const SimData q = *BuildSimData(c, c.noise[0], 1);
  int64_t total = 0, largest = 0, smallest = 1 << 20;
  for (const SiteData& s : q.sites) {
    total += s.clean.size();
    largest = std::max(largest, s.clean.size());
    smallest = std::min(smallest, s.clean.size());
  }
  EXPECT_EQ(total, 90);
  EXPECT_GE(smallest, 4);
  EXPECT_GT(largest, smallest);

  c.partition = PartitionKind::kAppearance;
  const SimData shifted = *BuildSimData(c, c.noise[0], 1);
  c.partition = PartitionKind::kIid;
  const SimData plain = *BuildSimData(c, c.noise[0], 1);
  EXPECT_TRUE(torch::equal(shifted.sites[0].clean.masks, plain.sites[0].clean.masks));
  EXPECT_FALSE(torch::allclose(shifted.sites[0].clean.images, plain.sites[0].clean.images))
      << "same images through another scanner";
}

TEST(SimData, AnnotatorModeGivesEachSiteItsAnnotatorAndTestsOnGold) {
  ExperimentConfig c = Tiny("/unused");
  c.dataset = DatasetKind::kAnnotators;
  c.root = std::string(SPLITFED_SOURCE_DIR) + "/../shared/data/bubil-fluorescence";
  c.num_classes = 2;
  c.annotators = {"expert1", "crowd1", "crowd2"};
  c.noise = {{"annotators", std::vector<SiteNoise>(3)}};
  ASSERT_TRUE(ValidateExperiment(c).ok());
  const SimData d = *BuildSimData(c, c.noise[0], 1);
  int64_t images = d.test.size();
  for (const SiteData& s : d.sites) {
    images += s.clean.size();
    EXPECT_FALSE(torch::equal(s.clean.masks, s.annotated.masks)) << s.annotator << " vs gold";
  }
  EXPECT_EQ(images, 119);
  EXPECT_EQ(d.sites[1].annotator, "crowd1");
}

TEST(SimRun, InProcessRunWritesEveryOutputAndStopsCleanly) {
  const fs::path out = fs::temp_directory_path() / ("splitfed_sim_" + std::to_string(::getpid()));
  fs::remove_all(out);
  ExperimentConfig c = Tiny(out);
  c.seeds = {1, 2};
  std::vector<ProgressEvent> events;
  std::mutex m;
  ExperimentRunner runner(c, [&](const ProgressEvent& e) {
    std::lock_guard<std::mutex> lock(m);
    events.push_back(e);
  });
  auto results = runner.Run();
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 4u);  // (splitfed, oracle) × 2 seeds
  for (const RunResult& r : *results) {
    EXPECT_TRUE(r.finished);
    ASSERT_EQ(r.rounds.size(), 2u);
    EXPECT_EQ(r.rounds[0].sites.size(), 3u);
    EXPECT_TRUE(fs::exists(r.model_path)) << r.model_path;
    EXPECT_GT(r.images_trained, 0);
  }
  for (const char* f : {"config.toml", "runs.csv", "rounds.csv", "rounds.jsonl", "site_rounds.csv",
                        "site_rounds.jsonl", "summary.json", "summary.md", "runs.db",
                        "plots/dice-one-noisy.svg", "plots/weights-splitfed-one-noisy.svg",
                        "preview/one-noisy/site-3.png"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  EXPECT_EQ(Lines(out / "runs.csv"), 1 + 4);
  EXPECT_EQ(Lines(out / "rounds.csv"), 1 + 4 * 2);
  EXPECT_EQ(Lines(out / "site_rounds.csv"), 1 + 4 * 2 * 3);
  // Measured noise: the clean sites have no corrupted image to average (empty field); the
  // noisy one's corrupted masks are measurably off.
  const std::string quality = ReadText(out / "preview/one-noisy/mask_quality.csv");
  EXPECT_NE(quality.find("\nsite-1,"), std::string::npos) << quality;
  EXPECT_NE(quality.find(",1.0000,\n"), std::string::npos) << quality;
  const size_t noisy_row = quality.find("\nsite-3,");
  ASSERT_NE(noisy_row, std::string::npos) << quality;
  const double noisy_dice = std::stod(quality.substr(quality.rfind(',') + 1));
  EXPECT_GT(noisy_dice, 0.0) << quality;
  EXPECT_LT(noisy_dice, 0.99) << quality;
  const auto summary = nlohmann::json::parse(ReadText(out / "summary.json"));
  ASSERT_EQ(summary.size(), 2u);
  EXPECT_EQ(summary[0]["method"], "splitfed");
  EXPECT_EQ(summary[0]["seeds"].size(), 2u);
  EXPECT_TRUE(summary[0]["delta_dice"].is_number());
  EXPECT_EQ(summary[1]["method"], "oracle");
  EXPECT_DOUBLE_EQ(summary[1]["delta_dice"].get<double>(), 0.0);
  // Sites report epochs and the coordinator each closed round.
  int64_t closed = 0, epochs = 0;
  for (const ProgressEvent& e : events) closed += e.round_closed, epochs += e.epoch > 0;
  EXPECT_EQ(closed, 4 * 2);
  EXPECT_EQ(epochs, 4 * 2 * 3);
  // The resolved config runs again as written.
  EXPECT_TRUE(LoadExperiment((out / "config.toml").string()).ok());

  // Stopped during the first run's first epoch: nothing recorded, no hang, no error.
  const fs::path out2 = out / "stopped";
  ExperimentConfig c2 = Tiny(out2);
  ExperimentRunner* self = nullptr;
  ExperimentRunner stopper(c2, [&](const ProgressEvent& e) {
    if (e.epoch > 0) self->Stop();
  });
  self = &stopper;
  auto none = stopper.Run();
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
  EXPECT_FALSE(fs::exists(out2 / "summary.json"));
  fs::remove_all(out);
}

TEST(SimRun, MutualTlsTransportSflV2AndARobustRuleRunEndToEnd) {
  const fs::path out = fs::temp_directory_path() / ("splitfed_sim_tls_" + std::to_string(::getpid()));
  fs::remove_all(out);
  ExperimentConfig c = Tiny(out);
  c.transport = "mtls";
  c.mode = "sflv2";
  c.methods = {"median"};
  c.rounds = 1;
  ExperimentRunner runner(c, nullptr);
  auto results = runner.Run();
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 1u);
  EXPECT_TRUE(fs::exists(out / "kit/ca/ca.key"));
  for (const SiteRoundResult& s : results->at(0).rounds.at(0).sites) {
    EXPECT_TRUE(s.included);
    EXPECT_GT(s.bytes_in, 0);
    EXPECT_DOUBLE_EQ(s.aggregation_weight, 1.0 / 3) << "the median reports 1/K";
  }
  fs::remove_all(out);
}

// Sites and the coordinator share one process and torch's global generator; the same seed
// must still give the same run, to the last digit.
TEST(SimRun, SplitFedClFindsTheCorruptedMasksAfterTheWarmUp) {
  // Half of site 3's masks dilated; SplitFed-CL's default detection (mixture on the teacher's
  // losses and τ_min) after a 6-round warm-up, scored against the images the simulator
  // corrupted. Deterministic: one thread per op and a fixed seed.
  const fs::path out = fs::temp_directory_path() / ("splitfed_sim_detect_" + std::to_string(::getpid()));
  fs::remove_all(out);
  ExperimentConfig c = Tiny(out);
  c.base_width = 16;
  c.images_per_site = 40;
  c.rounds = 9;
  c.local_epochs = 2;
  c.methods = {"splitfed-cl"};
  c.method.warmup_rounds = 6;
  ASSERT_EQ(c.noise[0].sites[2].image_fraction, 0.5);
  ExperimentRunner runner(c, nullptr);
  auto results = runner.Run();
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 1u);
  int64_t scored = 0;
  for (const RoundResult& round : results->front().rounds)
    for (const SiteRoundResult& site : round.sites) {
      if (round.round <= 6) {
        EXPECT_EQ(site.flagged, -1) << "warm-up: no mask is judged, so none is scored";
        continue;
      }
      if (site.site != "site-3") continue;
      EXPECT_GE(site.detection_precision, 0.8) << "round " << round.round;
      EXPECT_GE(site.detection_recall, 0.8) << "round " << round.round;
      EXPECT_LT(site.reliability, 0.8) << "q_k reflects the corrupted half";
      ++scored;
    }
  EXPECT_EQ(scored, 3);
  fs::remove_all(out);
}

TEST(SimRun, TheSameSeedGivesTheSameRun) {
  std::vector<std::vector<RoundResult>> twice;
  for (int i = 0; i < 2; ++i) {
    const fs::path out = fs::temp_directory_path() /
                         ("splitfed_sim_repro_" + std::to_string(::getpid()) + "_" + std::to_string(i));
    ExperimentConfig c = Tiny(out);
    c.methods = {"splitfed"};
    ExperimentRunner runner(c, nullptr);
    auto results = runner.Run();
    ASSERT_TRUE(results.ok()) << results.status();
    twice.push_back(results->at(0).rounds);
    fs::remove_all(out);
  }
  ASSERT_EQ(twice[0].size(), twice[1].size());
  for (size_t r = 0; r < twice[0].size(); ++r) {
    EXPECT_EQ(twice[0][r].test.dice, twice[1][r].test.dice) << "round " << r + 1;
    for (size_t k = 0; k < twice[0][r].sites.size(); ++k)
      EXPECT_EQ(twice[0][r].sites[k].train_loss, twice[1][r].sites[k].train_loss);
  }
}

TEST(Report, TheSelectedRoundIsTheSitesLowestMeanValidationLoss) {
  RunResult run;
  for (int64_t r = 1; r <= 4; ++r) {
    RoundResult round;
    round.round = r;
    round.test.dice = 0.1 * r;
    for (double loss : {1.0 / r, 0.5}) {
      SiteRoundResult s;
      s.included = true;
      s.validation_loss = r == 4 ? 2.0 : loss;  // round 4 overfits
      round.sites.push_back(s);
    }
    SiteRoundResult left_out;  // a site left out does not count
    left_out.included = false;
    left_out.validation_loss = 0.0;
    if (r == 2) round.sites.push_back(left_out);
    run.rounds.push_back(round);
  }
  SelectRoundByValidationLoss(run);
  EXPECT_EQ(run.selected_round, 3);
  EXPECT_DOUBLE_EQ(run.selected_test.dice, 0.1 * 3);
  for (RoundResult& round : run.rounds)
    for (SiteRoundResult& s : round.sites) s.validation_loss = -1;
  SelectRoundByValidationLoss(run);
  EXPECT_EQ(run.selected_round, 4) << "no validation loss: the last round";
}

TEST(Report, DetectionIsPooledOverSiteRoundsAfterTheWarmUp) {
  RunResult run;
  run.method = "splitfed-cl";
  run.noise = "n";
  auto site = [](int64_t flagged, int64_t hits, int64_t corrupted) {
    SiteRoundResult s;
    s.flagged = flagged;
    s.flagged_corrupted = hits;
    s.corrupted = corrupted;
    return s;
  };
  RoundResult warm_up;  // not scored: must not pull recall towards 0
  warm_up.sites = {site(-1, -1, -1), site(-1, -1, -1)};
  RoundResult after;
  // A clean site flagging 1 image and a noisy one flagging 9 of its 10 corrupted among 10
  // flags: pooled precision 9/11, recall 9/10 (the per-site mean would give 0.45 precision).
  after.sites = {site(1, 0, 0), site(10, 9, 10)};
  run.rounds = {warm_up, after};
  const std::vector<SummaryRow> rows = Summarize({run});
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_DOUBLE_EQ(rows[0].detection_precision, 9.0 / 11);
  EXPECT_DOUBLE_EQ(rows[0].detection_recall, 9.0 / 10);
  run.rounds = {warm_up};
  EXPECT_EQ(Summarize({run})[0].detection_recall, -1) << "nothing scored: undefined";
  after.sites = {site(3, 0, 0), site(2, 0, 0)};  // real annotators: no known corrupted mask
  run.rounds = {warm_up, after};
  EXPECT_EQ(Summarize({run})[0].detection_precision, -1) << "no truth to score flags against";
  EXPECT_EQ(Summarize({run})[0].detection_recall, -1);
}

TEST(Report, TheSummarySaysHowMuchSplitFedClRecovers) {
  ExperimentConfig c = DefaultExperiment();
  c.variants.push_back({"cl-x", "splitfed-cl", c.method, ""});
  auto row = [](const std::string& method, const std::string& noise, double delta) {
    SummaryRow r;
    r.method = method;
    r.noise = noise;
    r.has_delta = true;
    r.delta_dice = delta;
    return r;
  };
  const std::vector<SummaryRow> rows = {row("splitfed", "n", -0.056), row("oracle", "clean", 0),
                                        row("splitfed-cl", "n", -0.015), row("cl-x", "n", -0.07),
                                        row("median", "n", -0.01)};
  EXPECT_EQ(RecoveryLines(c, rows),
            (std::vector<std::string>{
                "splitfed-cl recovers 4.1 of the 5.6 Dice points FedAvg loses to label noise (n)",
                "cl-x recovers -1.4 of the 5.6 Dice points FedAvg loses to label noise (n)"}));
  EXPECT_EQ(RecoveryLines(c, {row("oracle", "clean", 0), row("splitfed", "m", -0.002),
                               row("splitfed-cl", "m", 0.001)}),
            (std::vector<std::string>{"splitfed-cl recovers all 0.2 Dice points FedAvg loses to "
                                      "label noise (m), and 0.1 more"}));
  EXPECT_TRUE(RecoveryLines(c, {row("splitfed", "n", -0.05), row("splitfed-cl", "n", 0)}).empty())
      << "no oracle, nothing to recover towards";
}

TEST(SimRun, AnExperimentSplitWithOnlyAndResumedRunsEachRunOnce) {
  const fs::path out = fs::temp_directory_path() / ("splitfed_sim_resume_" + std::to_string(::getpid()));
  fs::remove_all(out);
  ExperimentConfig c = Tiny(out);
  c.rounds = 1;
  c.methods = {"splitfed", "oracle"};
  EXPECT_EQ(SelectRuns(c, {{"fedprox"}, false}).status().code(), absl::StatusCode::kInvalidArgument);
  {
    ExperimentRunner only(c, nullptr, RunFilter{{"oracle"}, false});
    auto first = only.Run();
    ASSERT_TRUE(first.ok()) << first.status();
    ASSERT_EQ(first->size(), 1u);
    EXPECT_EQ(first->at(0).method, "oracle");
  }
  const fs::path oracle_file = out / "runs" / "oracle-clean-labels-seed1.json";
  ASSERT_TRUE(fs::exists(oracle_file));
  const std::string oracle_record = ReadText(oracle_file);
  ASSERT_EQ(SelectRuns(c, {{}, true})->size(), 1u) << "only splitfed is left";
  {
    ExperimentRunner resumed(c, nullptr, RunFilter{{}, true});
    auto second = resumed.Run();
    ASSERT_TRUE(second.ok()) << second.status();
    ASSERT_EQ(second->size(), 1u);
    EXPECT_EQ(second->at(0).method, "splitfed");
  }
  EXPECT_EQ(ReadText(oracle_file), oracle_record) << "a recorded run is not run again";
  EXPECT_TRUE(SelectRuns(c, {{}, true})->empty());
  // The tables hold both runs, in the plan's order, as if run in one go.
  EXPECT_EQ(Lines(out / "runs.csv"), 1 + 2);
  const auto summary = nlohmann::json::parse(ReadText(out / "summary.json"));
  ASSERT_EQ(summary.size(), 2u);
  EXPECT_EQ(summary[0]["method"], "splitfed");
  EXPECT_TRUE(summary[0]["delta_dice"].is_number());
  EXPECT_TRUE(summary[0]["selected_dice_mean"].is_number());
  auto loaded = LoadRuns(c);
  ASSERT_TRUE(loaded.ok());
  ASSERT_EQ(loaded->size(), 2u);
  EXPECT_EQ(loaded->at(1).rounds.at(0).sites.size(), 3u);
  EXPECT_GE(loaded->at(1).rounds.at(0).sites.at(0).validation_loss, 0) << "the store keeps it";
  // A damaged record is named, not silently run again.
  std::ofstream(oracle_file) << "{\"method\": ";
  auto damaged = SelectRuns(c, {{}, true});
  ASSERT_FALSE(damaged.ok());
  EXPECT_EQ(damaged.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(damaged.status().message().find("oracle-clean-labels-seed1.json"), std::string::npos);
  // A fresh run (no --resume, no --only) starts from an empty record.
  ExperimentConfig fresh = c;
  fresh.methods = {"splitfed"};
  ExperimentRunner again(fresh, nullptr);
  ASSERT_TRUE(again.Run().ok());
  EXPECT_FALSE(fs::exists(oracle_file));
  fs::remove_all(out);
}

TEST(Report, SlugsAndChartsAreSafe) {
  EXPECT_EQ(RunSlug("splitfed", "40% noisy / <b>"), "splitfed-40-noisy-b");
  const std::string svg = LineChartSvg("a<b", "round", "Dice", {{"x&y", {{1, 0.5}, {2, 0.7}}}});
  EXPECT_NE(svg.find("a&lt;b"), std::string::npos);
  EXPECT_NE(svg.find("x&amp;y"), std::string::npos);
  EXPECT_NE(svg.find("<polyline"), std::string::npos);
}

}  // namespace
}  // namespace splitfed::sim
