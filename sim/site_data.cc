#include "sim/site_data.h"

#include <torch/torch.h>

#include <random>

#include "absl/strings/str_cat.h"
#include "datasets/folder_dataset.h"
#include "status/status_macros.h"

namespace splitfed::sim {
namespace {

// Independent streams from one seed: (seed, purpose, index) → an engine.
std::mt19937_64 Stream(uint64_t seed, uint64_t purpose, uint64_t index = 0) {
  std::seed_seq seq{seed, purpose, index};
  return std::mt19937_64(seq);
}
enum Purpose : uint64_t { kPartition = 1, kTestSplit, kAppearance, kNoise, kPhantoms };

SegmentationSet Take(const SegmentationSet& set, const std::vector<int64_t>& indices) {
  return set.Subset(torch::tensor(indices, torch::kLong));
}

SegmentationSet Concat(const std::vector<SegmentationSet>& parts) {
  SegmentationSet out;
  std::vector<torch::Tensor> images, masks;
  for (const SegmentationSet& p : parts) {
    if (p.size() == 0) continue;
    images.push_back(p.images);
    masks.push_back(p.masks);
    out.names.insert(out.names.end(), p.names.begin(), p.names.end());
    out.num_classes = p.num_classes;
  }
  out.images = torch::cat(images);
  out.masks = torch::cat(masks);
  return out;
}

// Splits `n` shuffled indices into a held-out test share and the rest.
void HoldOut(int64_t n, double fraction, uint64_t seed, uint64_t index, std::vector<int64_t>* test,
             std::vector<int64_t>* rest) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng = Stream(seed, kTestSplit, index);
  std::shuffle(order.begin(), order.end(), rng);
  const int64_t n_test = std::clamp<int64_t>(std::llround(n * fraction), 1, n - 2);
  test->assign(order.begin(), order.begin() + n_test);
  rest->assign(order.begin() + n_test, order.end());
}

absl::StatusOr<SegmentationSet> LoadFolder(const ExperimentConfig& c, const std::string& root,
                                           const std::string& masks) {
  FolderDatasetOptions o;
  o.root = root;
  o.masks_dir = masks;
  o.height = o.width = c.image_size;
  o.channels = c.channels;
  o.num_classes = c.num_classes;
  o.standardize = false;  // appearance shifts act on [0, 1] intensities; standardised later
  return LoadFolderDataset(o);
}

// Each image's largest foreground class and its foreground area (for the class partition).
void LabelKeys(const SegmentationSet& set, std::vector<int64_t>* dominant,
               std::vector<int64_t>* area) {
  const torch::Tensor counts = torch::one_hot(set.masks.flatten(1), set.num_classes).sum(1);
  const torch::Tensor fg = counts.narrow(1, 1, set.num_classes - 1);
  const torch::Tensor best = fg.argmax(1) + 1, total = fg.sum(1);
  for (int64_t i = 0; i < set.size(); ++i) {
    dominant->push_back(best[i].item<int64_t>());
    area->push_back(total[i].item<int64_t>());
  }
}

LabelMask ToLabelMask(const torch::Tensor& mask) {
  const torch::Tensor m = mask.contiguous();
  LabelMask out{m.size(0), m.size(1), {}};
  out.labels.assign(m.data_ptr<int64_t>(), m.data_ptr<int64_t>() + m.numel());
  return out;
}

void Corrupt(SiteData* site, const ExperimentConfig& c, uint64_t seed, int64_t index) {
  const int64_t n = site->annotated.size();
  site->corrupted.assign(n, false);
  if (site->noise.clean()) return;
  std::mt19937_64 rng = Stream(seed, kNoise, index);
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  const int64_t count = std::llround(site->noise.image_fraction * n);
  NoiseParams params;
  params.severity = site->noise.severity;
  params.bias = site->noise.bias;
  params.amplitude = site->noise.amplitude;
  params.num_classes = c.num_classes;
  site->annotated.masks = site->annotated.masks.clone();
  for (int64_t j = 0; j < count; ++j) {
    const int64_t i = order[j];
    LabelMask mask = ToLabelMask(site->annotated.masks[i]);
    for (NoiseModel model : site->noise.models) mask = CorruptMask(mask, model, params, rng);
    site->annotated.masks[i].copy_(
        torch::tensor(mask.labels, torch::kLong).view({mask.height, mask.width}));
    site->corrupted[i] = true;
  }
}

}  // namespace

ScannerAppearance SiteAppearance(uint64_t seed, int64_t site) {
  std::mt19937_64 rng = Stream(seed, kAppearance, site);
  auto u = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  ScannerAppearance a;
  a.gamma = u(0.6, 1.6);
  a.contrast = u(0.7, 1.3);
  a.blur_sigma = u(0.0, 1.2);
  return a;
}

absl::StatusOr<SimData> BuildSimData(const ExperimentConfig& c, const NoiseSetting& noise,
                                     uint64_t seed) {
  SimData out;
  const int64_t k_sites = c.sites;
  // 1. The pool (unstandardised, [0, 1]), the test set, and each site's share of the pool.
  //    `gold` and `annotators` hold the same images with different masks.
  SegmentationSet pool;
  std::vector<SegmentationSet> annotator_pools;  // annotator mode: one per site
  std::vector<std::vector<int64_t>> shares;
  std::vector<SegmentationSet> site_sets;  // site-folders: already divided
  if (c.dataset == DatasetKind::kPhantom) {
    PhantomOptions p;
    p.count = c.images_per_site * k_sites;
    p.height = p.width = c.image_size;
    p.num_classes = c.num_classes;
    p.seed = Stream(seed, kPhantoms)();
    p.standardize = false;
    ASSIGN_OR_RETURN(SegmentationSet generated, GeneratePhantoms(p));
    pool = generated;
    PhantomOptions t = p;
    t.count = c.test_images;
    t.seed = p.seed + 1;
    t.standardize = true;
    ASSIGN_OR_RETURN(SegmentationSet test, GeneratePhantoms(t));
    out.test = test;
  } else if (c.dataset == DatasetKind::kSiteFolders) {
    std::vector<SegmentationSet> tests;
    for (int64_t k = 0; k < k_sites; ++k) {
      ASSIGN_OR_RETURN(SegmentationSet s, LoadFolder(c, c.site_roots[k], c.masks));
      if (s.size() < 4)
        return absl::InvalidArgumentError(
            absl::StrCat(c.site_roots[k], ": ", s.size(), " images; a site needs at least 4"));
      std::vector<int64_t> test, rest;
      HoldOut(s.size(), c.test_fraction, seed, k, &test, &rest);
      tests.push_back(Take(s, test));
      site_sets.push_back(Take(s, rest));
    }
    out.test = Concat(tests);
    out.test.images = StandardizePerImage(out.test.images);
  } else {
    ASSIGN_OR_RETURN(SegmentationSet all, LoadFolder(c, c.root, c.masks));
    if (all.size() < k_sites * 2 + 1)
      return absl::InvalidArgumentError(absl::StrCat(
          c.root, ": ", all.size(), " images are too few for ", k_sites, " sites and a test set"));
    std::vector<int64_t> test, rest;
    HoldOut(all.size(), c.test_fraction, seed, 0, &test, &rest);
    out.test = Take(all, test);
    out.test.images = StandardizePerImage(out.test.images);
    pool = Take(all, rest);
    if (c.dataset == DatasetKind::kAnnotators) {
      for (const std::string& who : c.annotators) {
        ASSIGN_OR_RETURN(SegmentationSet a, LoadFolder(c, c.root, "annotators/" + who));
        if (a.names != all.names)
          return absl::InvalidArgumentError(absl::StrCat(
              c.root, "/annotators/", who, ": does not have a mask for every image"));
        annotator_pools.push_back(Take(a, rest));
      }
    }
  }
  if (site_sets.empty()) {
    std::mt19937_64 rng = Stream(seed, kPartition);
    switch (c.partition) {
      case PartitionKind::kIid:
      case PartitionKind::kAppearance:
        shares = IidPartition(pool.size(), k_sites, rng);
        break;
      case PartitionKind::kQuantity: {
        ASSIGN_OR_RETURN(Partition p,
                         QuantitySkewPartition(pool.size(), k_sites, c.alpha, c.min_images, rng));
        shares = p;
        break;
      }
      case PartitionKind::kClass: {
        std::vector<int64_t> dominant, area;
        LabelKeys(pool, &dominant, &area);
        shares = ClassSkewPartition(dominant, area, k_sites);
        break;
      }
    }
    for (int64_t k = 0; k < k_sites; ++k) {
      // Shuffled within the site, so its validation images (the last ones) are a fair sample.
      std::vector<int64_t> share = shares[k];
      std::mt19937_64 order = Stream(seed, kPartition, k + 1);
      std::shuffle(share.begin(), share.end(), order);
      if (share.size() < 2)
        return absl::InvalidArgumentError(absl::StrCat("site-", k + 1, " would get ", share.size(),
                                                       " images; it needs at least 2"));
      site_sets.push_back(Take(pool, share));
      shares[k] = share;
    }
  }

  // 2. Per site: its scanner, its annotator, its noise; then standardise.
  const std::vector<std::string> names = c.SiteNames();
  for (int64_t k = 0; k < k_sites; ++k) {
    SiteData site;
    site.name = names[k];
    site.noise = noise.sites[k];
    site.clean = site_sets[k];
    if (c.partition == PartitionKind::kAppearance) {
      site.appearance = SiteAppearance(seed, k);
      torch::Tensor images = site.clean.images.clone();
      for (int64_t i = 0; i < images.size(0); ++i)
        for (int64_t ch = 0; ch < images.size(1); ++ch)
          images[i][ch].copy_(ApplyAppearance(images[i][ch], site.appearance));
      site.clean.images = images;
    }
    site.clean.images = StandardizePerImage(site.clean.images);
    site.annotated = site.clean;
    if (!annotator_pools.empty()) {
      site.annotator = c.annotators[k];
      site.annotated.masks = Take(annotator_pools[k], shares[k]).masks;
    }
    Corrupt(&site, c, seed, k);
    out.sites.push_back(std::move(site));
  }
  return out;
}

}  // namespace splitfed::sim
