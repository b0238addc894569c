// An experiment: which data, how it is divided among simulated sites, which label noise each
// site gets, and which methods and seeds to run. Read from a TOML file (every key checked) or
// the built-in default; written back out, resolved, next to the results.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "colearning/method.h"
#include "sim/label_noise.h"
#include "sim/partition.h"

namespace splitfed::sim {

enum class DatasetKind {
  kPhantom,      // generated phantoms (no files needed)
  kFolder,       // one folder dataset, divided among the sites
  kSiteFolders,  // one folder dataset per site
  kAnnotators,   // one folder with several annotators' masks; each site takes one annotator's
};
absl::StatusOr<DatasetKind> ParseDatasetKind(const std::string& name);
const char* DatasetKindName(DatasetKind kind);

// One site's label noise in one setting.
struct SiteNoise {
  std::vector<NoiseModel> models;  // applied in order; empty = clean
  double image_fraction = 0;       // share of the site's images that are corrupted
  double severity = 1.0;
  NoiseBias bias = NoiseBias::kMixed;
  BoundaryAmplitude amplitude = BoundaryAmplitude::kRelative;  // the boundary model's

  bool clean() const { return models.empty() || image_fraction <= 0; }
  std::string Describe() const;  // e.g. "boundary 80% sev 1 expand", "clean"
};

// A named noise setting: one SiteNoise per site.
struct NoiseSetting {
  std::string name;
  std::vector<SiteNoise> sites;
};

// A method under a name of its own: a known method (`base`) with some [method] keys changed,
// and optionally another aggregation rule. Experiments compare options this way.
struct MethodVariant {
  std::string name, base;
  MethodOptions method;
  std::string aggregation;  // empty: the base method's rule
};

struct ExperimentConfig {
  std::string name = "default";
  std::string out_dir = "sim-results";

  // [data]
  DatasetKind dataset = DatasetKind::kPhantom;
  std::string root;                     // folder / annotators
  std::vector<std::string> site_roots;  // site-folders: one per site
  std::string masks = "masks";          // folder masks (and the gold masks for annotators)
  std::vector<std::string> annotators;  // annotators: one annotator folder name per site
  int64_t image_size = 64;
  int64_t num_classes = 4;
  int64_t channels = 1;
  int64_t images_per_site = 40;  // phantoms
  int64_t test_images = 48;      // phantoms: a held-out set from its own seed
  double test_fraction = 0.2;    // folders: the share held out, clean, for testing
  double validation_fraction = 0.2;

  // [partition]
  PartitionKind partition = PartitionKind::kIid;
  double alpha = 0.5;      // quantity skew's Dirichlet concentration
  int64_t min_images = 8;  // quantity skew: the smallest share

  // [federation]
  int64_t sites = 4;
  int64_t rounds = 10;
  int64_t local_epochs = 1;
  int64_t batch_size = 8;
  double learning_rate = 1e-3;
  std::string mode = "sflv1";
  std::string transport = "inprocess";  // inprocess | mtls
  std::string activation_encoding = "fp32";
  int64_t base_width = 16;
  int64_t depth = 4;
  std::string split = "deep";
  int threads = 0;  // torch intra-op threads; 0: cores ÷ sites, at least 1

  // [experiment]
  std::vector<std::string> methods = {"splitfed", "oracle"};
  std::vector<uint64_t> seeds = {1};
  std::vector<NoiseSetting> noise;

  // [method]: the settings the teacher methods share (warm-up, teacher β, ramp-in, τ_min, δ,
  // κ, FedNoRo's distillation weight); each method then sets its own switches.
  MethodOptions method;
  std::vector<MethodVariant> variants;  // [[variant]] tables

  std::vector<std::string> SiteNames() const;  // site-1, site-2, ...
};

// The methods this build can run, all on the same split pipeline: "splitfed" (FedAvg),
// "oracle" (FedAvg on clean labels), "qa-splitfed" (quality-weighted by validation loss),
// "median" and "trimmed-mean" (coordinate-wise robust aggregation), "feda3i", "fednoro",
// "splitfed-cl" and its ablations "splitfed-cl-no-refinement", "-no-consistency",
// "-fixed-weights", "-fedavg", "-fixed-tau".
const std::vector<std::string>& KnownMethods();
// What the coordinator runs for a simulator method: the learning method (starting from the
// experiment's [method] settings) and the aggregation rule (empty: the method's default).
struct RunMethod {
  MethodOptions method;
  std::string aggregation;
};
RunMethod MethodOf(const std::string& method, const MethodOptions& base);
// The same, also for the experiment's variants (which start from their own options).
RunMethod MethodOf(const std::string& method, const ExperimentConfig& config);

// The built-in experiment (about 8 minutes on 2 cores): phantoms at 64², 5 sites of 40
// images, 4 of which have 80 % of their masks moved by a random affine transform; 40 rounds ×
// 2 local epochs; SplitFed-CL against FedAvg SplitFed and the clean oracle, seed 1.
ExperimentConfig DefaultExperiment();

// Reads an experiment file. Unknown keys and bad values are errors that name the key;
// relative paths are taken from the file's folder.
absl::StatusOr<ExperimentConfig> LoadExperiment(const std::string& path);
absl::StatusOr<ExperimentConfig> ParseExperiment(const std::string& toml_text,
                                                 const std::string& source_name,
                                                 const std::string& base_folder);
absl::Status ValidateExperiment(const ExperimentConfig& config);

// The resolved experiment as TOML (every value explicit, the noise per site spelled out);
// LoadExperiment() reads it back to the same experiment.
std::string ExperimentToToml(const ExperimentConfig& config);

}  // namespace splitfed::sim
