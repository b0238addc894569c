#include "sim/experiment.h"

#include <toml++/toml.h>

#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "config/method_table.h"
#include "config/toml_reader.h"
#include "status/status_macros.h"

namespace splitfed::sim {
namespace fs = std::filesystem;
namespace {

using config::TomlTable;

absl::StatusOr<std::vector<NoiseModel>> ParseModels(const std::string& text) {
  std::vector<NoiseModel> models;
  if (text.empty() || text == "none") return models;
  for (const absl::string_view part_view : absl::StrSplit(text, '+')) {
    const std::string part(part_view);
    ASSIGN_OR_RETURN(NoiseModel m, ParseNoiseModel(part));
    models.push_back(m);
  }
  return models;
}

std::string ModelsText(const std::vector<NoiseModel>& models) {
  if (models.empty()) return "none";
  std::vector<std::string> names;
  for (NoiseModel m : models) names.push_back(NoiseModelName(m));
  return absl::StrJoin(names, "+");
}

// One site's noise from a table with model / image_fraction / severity / bias.
absl::Status ReadSiteNoise(TomlTable& r, SiteNoise* out, std::string* bias_text) {
  std::string model = ModelsText(out->models);
  RETURN_IF_ERROR(r.String("model", &model));
  absl::StatusOr<std::vector<NoiseModel>> models = ParseModels(model);
  if (!models.ok()) return r.Error("model", std::string(models.status().message()));
  out->models = *models;
  RETURN_IF_ERROR(r.Double("image_fraction", &out->image_fraction, 0, 1));
  RETURN_IF_ERROR(r.Double("severity", &out->severity, 0, 1));
  std::string amplitude = BoundaryAmplitudeName(out->amplitude);
  RETURN_IF_ERROR(r.String("amplitude", &amplitude));
  absl::StatusOr<BoundaryAmplitude> a = ParseBoundaryAmplitude(amplitude);
  if (!a.ok()) return r.Error("amplitude", std::string(a.status().message()));
  out->amplitude = *a;
  RETURN_IF_ERROR(r.String("bias", bias_text));
  if (*bias_text != "alternate") {
    absl::StatusOr<NoiseBias> b = ParseNoiseBias(*bias_text);
    if (!b.ok()) return r.Error("bias", std::string(b.status().message()));
    out->bias = *b;
  }
  return absl::OkStatus();
}

absl::StatusOr<NoiseSetting> ReadNoiseSetting(TomlTable& r, int64_t sites) {
  NoiseSetting setting;
  RETURN_IF_ERROR(r.String("name", &setting.name));
  if (setting.name.empty()) return r.Error("name", "every noise setting needs a name");
  // Either a sweep-style description (a share of the sites, all alike) ...
  double noisy_sites = 0;
  RETURN_IF_ERROR(r.Double("noisy_sites", &noisy_sites, 0, 1));
  SiteNoise noisy;
  noisy.models = {NoiseModel::kBoundary};
  noisy.image_fraction = 0.8;
  std::string bias = "alternate";
  RETURN_IF_ERROR(ReadSiteNoise(r, &noisy, &bias));
  // ... or one entry per site.
  const bool per_site = r.Has("site");
  ASSIGN_OR_RETURN(std::vector<TomlTable> site_tables, r.Tables("site"));
  RETURN_IF_ERROR(r.RejectUnknown());
  if (per_site) {
    if (static_cast<int64_t>(site_tables.size()) != sites)
      return r.Error("site", absl::StrCat("lists ", site_tables.size(), " sites; the federation has ", sites));
    for (TomlTable& sr : site_tables) {
      SiteNoise n;
      std::string site_bias = "mixed";
      RETURN_IF_ERROR(ReadSiteNoise(sr, &n, &site_bias));
      if (site_bias == "alternate")
        return sr.Error("bias", "'alternate' is for the whole setting; say shrink, expand or mixed");
      RETURN_IF_ERROR(sr.RejectUnknown());
      setting.sites.push_back(n);
    }
    return setting;
  }
  // The last round(noisy_sites · K) sites are noisy (site-1 is always clean unless all are);
  // "alternate" gives them shrink, expand, shrink, ... like annotators with opposite habits.
  const int64_t count = std::llround(noisy_sites * sites);
  setting.sites.assign(sites, SiteNoise{});
  for (int64_t k = sites - count, j = 0; k < sites; ++k, ++j) {
    SiteNoise n = noisy;
    if (bias == "alternate") n.bias = j % 2 == 0 ? NoiseBias::kShrink : NoiseBias::kExpand;
    setting.sites[k] = n;
  }
  return setting;
}

std::string Quoted(const std::string& s) {
  std::ostringstream out;
  out << toml::value<std::string>(s);
  return out.str();
}

std::string QuotedList(const std::vector<std::string>& items) {
  std::vector<std::string> q;
  for (const auto& i : items) q.push_back(Quoted(i));
  return absl::StrCat("[", absl::StrJoin(q, ", "), "]");
}

}  // namespace

absl::StatusOr<DatasetKind> ParseDatasetKind(const std::string& name) {
  if (name == "phantom") return DatasetKind::kPhantom;
  if (name == "folder") return DatasetKind::kFolder;
  if (name == "site-folders") return DatasetKind::kSiteFolders;
  if (name == "annotators") return DatasetKind::kAnnotators;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown dataset kind '", name, "'; expected phantom, folder, site-folders or annotators"));
}

const char* DatasetKindName(DatasetKind kind) {
  switch (kind) {
    case DatasetKind::kPhantom: return "phantom";
    case DatasetKind::kFolder: return "folder";
    case DatasetKind::kSiteFolders: return "site-folders";
    case DatasetKind::kAnnotators: return "annotators";
  }
  return "?";
}

std::string SiteNoise::Describe() const {
  if (clean()) return "clean";
  return absl::StrCat(ModelsText(models), " ", std::lround(image_fraction * 100), "% sev ",
                      severity, " ", NoiseBiasName(bias));
}

std::vector<std::string> ExperimentConfig::SiteNames() const {
  std::vector<std::string> names;
  for (int64_t k = 1; k <= sites; ++k) names.push_back(absl::StrCat("site-", k));
  return names;
}

const std::vector<std::string>& KnownMethods() {
  static const std::vector<std::string> methods = {
      "splitfed",    "oracle",  "qa-splitfed", "median",
      "trimmed-mean", "feda3i", "fednoro",     "splitfed-cl",
      "splitfed-cl-no-refinement", "splitfed-cl-no-consistency", "splitfed-cl-fixed-weights",
      "splitfed-cl-fedavg",        "splitfed-cl-fixed-tau"};
  return methods;
}

RunMethod MethodOf(const std::string& method, const ExperimentConfig& config) {
  for (const MethodVariant& v : config.variants)
    if (v.name == method) {
      RunMethod r = MethodOf(v.base, v.method);
      if (!v.aggregation.empty()) r.aggregation = v.aggregation;
      return r;
    }
  return MethodOf(method, config.method);
}

RunMethod MethodOf(const std::string& method, const MethodOptions& base) {
  RunMethod r{base, ""};
  r.method.kind = MethodKind::kSplitFed;  // the oracle too: FedAvg on clean labels
  if (method == "qa-splitfed") r.aggregation = "quality";
  if (method == "median" || method == "trimmed-mean") r.aggregation = method;
  if (method == "feda3i") r.method.kind = MethodKind::kFedA3I;
  if (method == "fednoro") r.method.kind = MethodKind::kFedNoRo;
  if (method.rfind("splitfed-cl", 0) == 0) {
    r.method.kind = MethodKind::kColearning;
    if (method == "splitfed-cl-no-refinement") r.method.refinement = RefinementMode::kOff;
    if (method == "splitfed-cl-no-consistency") r.method.consistency = false;
    if (method == "splitfed-cl-fixed-weights") r.method.learned_loss_weights = false;
    if (method == "splitfed-cl-fedavg") r.aggregation = "fedavg";
    if (method == "splitfed-cl-fixed-tau") r.method.threshold.fixed_tau = true;
  }
  return r;
}

ExperimentConfig DefaultExperiment() {
  // The research setting of docs/RESULTS.md §A, one seed: long enough that the oracle has
  // converged and the teacher has something to teach when the warm-up ends.
  ExperimentConfig c;
  c.sites = 5;
  c.images_per_site = 40;
  c.rounds = 40;
  c.local_epochs = 2;
  c.learning_rate = 2e-3;
  c.methods = {"splitfed-cl", "splitfed", "oracle"};
  c.method.warmup_rounds = 15;
  // Four of the five sites have 80 % of their masks moved by a random affine transform.
  const SiteNoise shifted{{NoiseModel::kAffine}, 0.8, 1.0, NoiseBias::kMixed};
  c.noise = {{"4 of 5 sites affine", {SiteNoise{}, shifted, shifted, shifted, shifted}}};
  return c;
}

absl::StatusOr<ExperimentConfig> ParseExperiment(const std::string& toml_text,
                                                 const std::string& source,
                                                 const std::string& base_folder) {
  ASSIGN_OR_RETURN(const config::TomlDocument doc,
                   config::TomlDocument::Parse(toml_text, source, base_folder));
  ExperimentConfig c;
  c.noise.clear();
  // Paths come out absolute, so that the resolved config.toml an experiment saves still finds
  // its data when `--resume` reads it from the output folder.
  TomlTable top = doc.Root();
  RETURN_IF_ERROR(top.String("name", &c.name));
  RETURN_IF_ERROR(top.Path("out", &c.out_dir));
  ASSIGN_OR_RETURN(TomlTable d, top.Table("data"));
  ASSIGN_OR_RETURN(TomlTable p, top.Table("partition"));
  ASSIGN_OR_RETURN(TomlTable f, top.Table("federation"));
  ASSIGN_OR_RETURN(TomlTable e, top.Table("experiment"));
  ASSIGN_OR_RETURN(TomlTable m, top.Table("method"));
  ASSIGN_OR_RETURN(std::vector<TomlTable> variants, top.Tables("variant"));
  ASSIGN_OR_RETURN(std::vector<TomlTable> noise, top.Tables("noise"));
  RETURN_IF_ERROR(top.RejectUnknown());

  std::string kind = DatasetKindName(c.dataset);
  RETURN_IF_ERROR(d.String("kind", &kind));
  absl::StatusOr<DatasetKind> dk = ParseDatasetKind(kind);
  if (!dk.ok()) return d.Error("kind", std::string(dk.status().message()));
  c.dataset = *dk;
  RETURN_IF_ERROR(d.Path("root", &c.root));
  RETURN_IF_ERROR(d.Paths("site_roots", &c.site_roots));
  RETURN_IF_ERROR(d.String("masks", &c.masks));
  RETURN_IF_ERROR(d.Strings("annotators", &c.annotators));
  RETURN_IF_ERROR(d.Int("image_size", &c.image_size, 16, 1024));
  RETURN_IF_ERROR(d.Int("num_classes", &c.num_classes, 2, 6));
  RETURN_IF_ERROR(d.Int("channels", &c.channels, 1, 3));
  RETURN_IF_ERROR(d.Int("images_per_site", &c.images_per_site, 4, 100000));
  RETURN_IF_ERROR(d.Int("test_images", &c.test_images, 1, 100000));
  RETURN_IF_ERROR(d.Double("test_fraction", &c.test_fraction, 0.01, 0.9));
  RETURN_IF_ERROR(d.Double("validation_fraction", &c.validation_fraction, 0, 0.5));
  RETURN_IF_ERROR(d.RejectUnknown());

  std::string pk = PartitionKindName(c.partition);
  RETURN_IF_ERROR(p.String("kind", &pk));
  absl::StatusOr<PartitionKind> pkind = ParsePartitionKind(pk);
  if (!pkind.ok()) return p.Error("kind", std::string(pkind.status().message()));
  c.partition = *pkind;
  RETURN_IF_ERROR(p.Double("alpha", &c.alpha, 1e-3, 1e6));
  RETURN_IF_ERROR(p.Int("min_images", &c.min_images, 2, 100000));
  RETURN_IF_ERROR(p.RejectUnknown());

  RETURN_IF_ERROR(f.Int("sites", &c.sites, 1, 1024));
  RETURN_IF_ERROR(f.Int("rounds", &c.rounds, 1, 100000));
  RETURN_IF_ERROR(f.Int("local_epochs", &c.local_epochs, 1, 1000));
  RETURN_IF_ERROR(f.Int("batch_size", &c.batch_size, 2, 4096));
  RETURN_IF_ERROR(f.Double("learning_rate", &c.learning_rate, 1e-9, 10));
  RETURN_IF_ERROR(f.String("mode", &c.mode));
  RETURN_IF_ERROR(f.String("transport", &c.transport));
  RETURN_IF_ERROR(f.String("activation_encoding", &c.activation_encoding));
  RETURN_IF_ERROR(f.Int("base_width", &c.base_width, 1, 512));
  RETURN_IF_ERROR(f.Int("depth", &c.depth, 1, 6));
  RETURN_IF_ERROR(f.String("split", &c.split));
  int64_t threads = c.threads;
  RETURN_IF_ERROR(f.Int("threads", &threads, 0, 1024));
  c.threads = static_cast<int>(threads);
  RETURN_IF_ERROR(f.RejectUnknown());

  RETURN_IF_ERROR(e.Strings("methods", &c.methods));
  RETURN_IF_ERROR(e.Seeds("seeds", &c.seeds));
  RETURN_IF_ERROR(e.RejectUnknown());

  RETURN_IF_ERROR(config::ReadMethodTable(m, &c.method));
  RETURN_IF_ERROR(m.RejectUnknown());

  // Variants: a base method with some [method] keys changed, run under a name of their own.
  for (TomlTable& v : variants) {
    MethodVariant variant;
    variant.method = c.method;
    RETURN_IF_ERROR(v.String("name", &variant.name));
    RETURN_IF_ERROR(v.String("base", &variant.base));
    RETURN_IF_ERROR(v.String("aggregation", &variant.aggregation));
    RETURN_IF_ERROR(config::ReadMethodTable(v, &variant.method));
    RETURN_IF_ERROR(v.RejectUnknown());
    c.variants.push_back(variant);
  }

  for (TomlTable& t : noise) {
    ASSIGN_OR_RETURN(NoiseSetting setting, ReadNoiseSetting(t, c.sites));
    c.noise.push_back(setting);
  }
  if (c.noise.empty())  // no synthetic noise: every site as its data comes
    c.noise.push_back({c.dataset == DatasetKind::kAnnotators ? "annotators" : "clean",
                       std::vector<SiteNoise>(c.sites)});
  if (auto s = ValidateExperiment(c); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", s.message()));
  return c;
}

absl::StatusOr<ExperimentConfig> LoadExperiment(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read the experiment file"));
  std::stringstream text;
  text << in.rdbuf();
  return ParseExperiment(text.str(), path, fs::path(path).parent_path().string());
}

absl::Status ValidateExperiment(const ExperimentConfig& c) {
  auto bad = [](const std::string& key, const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": ", what));
  };
  if (c.methods.empty()) return bad("experiment.methods", "name at least one method");
  auto known = [](const std::string& m) {
    return std::find(KnownMethods().begin(), KnownMethods().end(), m) != KnownMethods().end();
  };
  std::set<std::string> variant_names;
  for (size_t i = 0; i < c.variants.size(); ++i) {
    const MethodVariant& v = c.variants[i];
    const std::string where = absl::StrCat("variant[", i, "]");
    if (v.name.empty()) return bad(where + ".name", "a variant needs a name");
    if (known(v.name) || !variant_names.insert(v.name).second)
      return bad(where + ".name", absl::StrCat("'", v.name, "' is already a method's name"));
    if (!known(v.base) || v.base == "oracle")
      return bad(where + ".base", absl::StrCat("'", v.base, "' is not a method a variant can build on (known: ",
                                                absl::StrJoin(KnownMethods(), ", "), ")"));
    if (auto s = v.method.Validate(); !s.ok()) return bad(where, std::string(s.message()));
    static const std::set<std::string> rules = {"fedavg", "reliability", "quality", "median",
                                                "trimmed-mean", "distance", "layerwise-quality"};
    if (!v.aggregation.empty() && !rules.count(v.aggregation))
      return bad(where + ".aggregation", absl::StrCat("unknown rule '", v.aggregation, "' (known: ",
                                                       absl::StrJoin(rules, ", "), ")"));
  }
  for (const std::string& m : c.methods)
    if (!known(m) && !variant_names.count(m))
      return bad("experiment.methods", absl::StrCat("unknown method '", m, "' (known: ",
                                                    absl::StrJoin(KnownMethods(), ", "),
                                                    ", or a [[variant]]'s name)"));
  if (c.seeds.empty()) return bad("experiment.seeds", "name at least one seed");
  if (c.mode != "sflv1" && c.mode != "sflv2")
    return bad("federation.mode", absl::StrCat("must be sflv1 or sflv2, got '", c.mode, "'"));
  if (c.transport != "inprocess" && c.transport != "mtls")
    return bad("federation.transport",
               absl::StrCat("must be inprocess or mtls, got '", c.transport, "'"));
  if (c.activation_encoding != "fp32" && c.activation_encoding != "fp16")
    return bad("federation.activation_encoding",
               absl::StrCat("must be fp32 or fp16, got '", c.activation_encoding, "'"));
  if (c.image_size % (1LL << c.depth) != 0)
    return bad("data.image_size", absl::StrCat(c.image_size, " is not divisible by 2^depth = ",
                                               1LL << c.depth));
  switch (c.dataset) {
    case DatasetKind::kPhantom:
      if (c.channels != 1) return bad("data.channels", "phantoms have 1 channel");
      break;
    case DatasetKind::kFolder:
      if (c.root.empty()) return bad("data.root", "a folder dataset needs its root");
      break;
    case DatasetKind::kSiteFolders:
      if (static_cast<int64_t>(c.site_roots.size()) != c.sites)
        return bad("data.site_roots", absl::StrCat("lists ", c.site_roots.size(),
                                                   " folders; the federation has ", c.sites,
                                                   " sites"));
      if (c.partition != PartitionKind::kIid && c.partition != PartitionKind::kAppearance)
        return bad("partition.kind", "site-folders are already divided: use iid or appearance");
      break;
    case DatasetKind::kAnnotators:
      if (c.root.empty()) return bad("data.root", "an annotators dataset needs its root");
      if (static_cast<int64_t>(c.annotators.size()) != c.sites)
        return bad("data.annotators", absl::StrCat("lists ", c.annotators.size(),
                                                   " annotators; the federation has ", c.sites,
                                                   " sites (one annotator per site)"));
      break;
  }
  if (c.dataset == DatasetKind::kPhantom && c.partition == PartitionKind::kQuantity &&
      c.min_images * c.sites > c.images_per_site * c.sites)
    return bad("partition.min_images", "more than the images there are");
  for (const NoiseSetting& n : c.noise) {
    if (static_cast<int64_t>(n.sites.size()) != c.sites)
      return bad("noise", absl::StrCat("setting '", n.name, "' describes ", n.sites.size(),
                                       " sites, not ", c.sites));
    for (const SiteNoise& s : n.sites)
      for (NoiseModel m : s.models)
        if (m == NoiseModel::kConfusion && c.num_classes < 3)
          return bad("noise", absl::StrCat("setting '", n.name,
                                           "': class confusion needs at least 3 classes"));
  }
  std::set<std::string> names;
  for (const NoiseSetting& n : c.noise)
    if (!names.insert(n.name).second)
      return bad("noise", absl::StrCat("two settings are named '", n.name, "'"));
  return absl::OkStatus();
}

// The shortest text that reads back as exactly `x`: a stream's default six digits would make
// a resumed experiment run with other values than the one it resumes.
std::string Number(double x) {
  char text[32];
  const std::to_chars_result end = std::to_chars(text, text + sizeof(text), x);
  return std::string(text, end.ptr);
}

std::string MethodKeysToml(const MethodOptions& m) {
  std::ostringstream o;
  o << "warmup_rounds = " << m.warmup_rounds << "\nwarmup_patience = " << m.warmup_patience
    << "\nteacher_beta = " << Number(m.teacher_beta) << "\nramp_rounds = " << m.ramp_rounds
    << "\ndetection = " << Quoted(colearning::DetectionModeName(m.threshold.detection))
    << "\nthreshold = " << Quoted(m.threshold.fixed_tau ? "fixed" : "gmm")
    << "\ntau_min = " << Number(m.threshold.tau_min)
    << "\nmin_gap = " << Number(m.threshold.min_gap)
    << "\nseparation = " << Number(m.threshold.separation) << "\nkappa = " << Number(m.kappa)
    << "\nrefinement = " << Quoted(RefinementName(m.refinement))
    << "\nconsistency = " << (m.consistency ? "true" : "false")
    << "\nloss_weights = " << Quoted(m.learned_loss_weights ? "learned" : "fixed")
    << "\ndistillation_weight = " << Number(m.distillation_weight) << "\n";
  return o.str();
}

std::string ExperimentToToml(const ExperimentConfig& c) {
  std::ostringstream o;
  o << "# The resolved experiment: every value explicit. `splitfed sim --config` reads it.\n";
  o << "name = " << Quoted(c.name) << "\nout = " << Quoted(c.out_dir) << "\n\n[data]\n";
  o << "kind = " << Quoted(DatasetKindName(c.dataset)) << "\nroot = " << Quoted(c.root)
    << "\nsite_roots = " << QuotedList(c.site_roots) << "\nmasks = " << Quoted(c.masks)
    << "\nannotators = " << QuotedList(c.annotators) << "\nimage_size = " << c.image_size
    << "\nnum_classes = " << c.num_classes << "\nchannels = " << c.channels
    << "\nimages_per_site = " << c.images_per_site << "\ntest_images = " << c.test_images
    << "\ntest_fraction = " << Number(c.test_fraction)
    << "\nvalidation_fraction = " << Number(c.validation_fraction) << "\n\n[partition]\n";
  o << "kind = " << Quoted(PartitionKindName(c.partition)) << "\nalpha = " << Number(c.alpha)
    << "\nmin_images = " << c.min_images << "\n\n[federation]\n";
  o << "sites = " << c.sites << "\nrounds = " << c.rounds << "\nlocal_epochs = " << c.local_epochs
    << "\nbatch_size = " << c.batch_size << "\nlearning_rate = " << Number(c.learning_rate)
    << "\nmode = " << Quoted(c.mode) << "\ntransport = " << Quoted(c.transport)
    << "\nactivation_encoding = " << Quoted(c.activation_encoding)
    << "\nbase_width = " << c.base_width << "\ndepth = " << c.depth
    << "\nsplit = " << Quoted(c.split) << "\nthreads = " << c.threads << "\n\n[experiment]\n";
  std::vector<std::string> seeds;
  for (uint64_t s : c.seeds) seeds.push_back(std::to_string(s));
  o << "methods = " << QuotedList(c.methods) << "\nseeds = [" << absl::StrJoin(seeds, ", ")
    << "]\n\n[method]\n";
  o << MethodKeysToml(c.method);
  for (const MethodVariant& v : c.variants) {
    o << "\n[[variant]]\nname = " << Quoted(v.name) << "\nbase = " << Quoted(v.base) << "\n";
    if (!v.aggregation.empty()) o << "aggregation = " << Quoted(v.aggregation) << "\n";
    o << MethodKeysToml(v.method);
  }
  for (const NoiseSetting& n : c.noise) {
    o << "\n[[noise]]\nname = " << Quoted(n.name) << "\nsite = [\n";
    for (const SiteNoise& s : n.sites)
      o << "  { model = " << Quoted(ModelsText(s.models))
        << ", image_fraction = " << Number(s.image_fraction)
        << ", severity = " << Number(s.severity) << ", bias = " << Quoted(NoiseBiasName(s.bias))
        << ", amplitude = " << Quoted(BoundaryAmplitudeName(s.amplitude)) << " },\n";
    o << "]\n";
  }
  return o.str();
}

}  // namespace splitfed::sim
